"""The participant side: what one organisation does with its own data, for a real node and for each
simulated participant alike: its shard and held-out split (`data`), its seeds and its share of the
distributed-DP noise (`seeds`, `privacy`), its model, local training and the voter's held-out loss
(`participant`). Nothing here reads the chain; nothing here builds a `Simulation`.
"""

"""What every driver and the audit compute for a round, from public records only: no model, no web3.

- `records`: commitments, adapter blobs <-> vectors, commit URIs, the round's public seed;
- `pipeline`: the aggregation rule and `compute_candidate` (screen, defence, DP), with its marks;
- `history`: what earlier rounds contribute (`PublicHistory`) and how a finished round is folded in;
- `chain_view`: a chain round record read against the store: its commitments and its candidate;
- `voting`: an honest voter's judgement and which posted candidate its ballot names.
"""

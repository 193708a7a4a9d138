"""The page's colours and chart series, from a run's report and its rounds as `state` lays them out:
one colour per participant by what it plays (strategy or attack kind), one chart per measured series."""

from __future__ import annotations

import colorsys
from typing import Any

# hue per participant strategy; attack kinds not listed get red/orange hues
STRATEGY_HUES = {"honest": 0.58, "lazy_voter": 0.12, "colluding_voter": 0.78, "no_show": None}
ATTACK_HUES = (0.0, 0.05, 0.94, 0.08)
DOMAIN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def strategies_of(r: dict[str, Any]) -> dict[str, str]:
    """Participant -> what it plays: the chain section's record, else attackers by attack kind."""
    chain = r.get("chain") or {}
    if isinstance(chain.get("strategies"), dict):
        return dict(chain["strategies"])
    names = list((r.get("participant_examples") or r.get("participant_domains") or {}).keys())
    attackers = r.get("attackers") or {}
    return {n: attackers.get(n, "honest") for n in names}


def participant_colours(strategies: dict[str, str], attackers: set[str]) -> dict[str, str]:
    """One colour per participant, its hue from its strategy (honest blue, attackers red, lazy voters
    amber, colluders purple, no-shows grey), its shade telling participants of one strategy apart."""
    by_kind: dict[str, list[str]] = {}
    for name in sorted(strategies):
        by_kind.setdefault(strategies[name], []).append(name)
    out: dict[str, str] = {}
    attack_kinds = sorted(k for k in by_kind if k not in STRATEGY_HUES)
    for kind, names in by_kind.items():
        if kind in STRATEGY_HUES:
            hue, sat = STRATEGY_HUES[kind], 0.65
        else:
            hue, sat = ATTACK_HUES[attack_kinds.index(kind) % len(ATTACK_HUES)], 0.8
        for j, name in enumerate(names):
            light = 0.30 + 0.35 * (j / max(len(names) - 1, 1))
            rgb = colorsys.hls_to_rgb(hue or 0.0, light, 0.0 if hue is None else sat)
            out[name] = "#" + "".join(f"{round(c * 255):02x}" for c in rgb)
    return out


def _chart(
    cid: str,
    title: str,
    y_label: str,
    x: list[Any],
    series: list[dict[str, Any]],
    x_label: str = "round",
    bars: bool = False,
) -> dict[str, Any]:
    """One chart: y fixed to 0–1 for rates, from zero for counts (bytes, gas), else fitted to the data."""
    rate = y_label.endswith("(0–1)")
    return {
        "id": cid,
        "title": title,
        "y_label": y_label,
        "x_label": x_label,
        "x": x,
        "series": series,
        "bars": bars,
        "y_range": [0, 1] if rate else None,
        "y_from_zero": cid in ("bytes", "gas"),
    }


def charts(r: dict[str, Any], rounds: list[dict[str, Any]], colours: dict[str, str]) -> list[dict[str, Any]]:
    """Chart series: x is the round number (0 = before the first round where the run has a value)."""
    out = []
    x = [0] + [d["round"] for d in rounds]
    base = (r.get("accuracy") or {}).get("base") or {}
    domains = [k for k in base if k != "mean"] or [
        k for k in (rounds[0]["accuracy"] if rounds else {}) if k != "mean"
    ]
    if domains:
        series = [
            {
                "label": d,
                "colour": DOMAIN_COLOURS[i % len(DOMAIN_COLOURS)],
                "values": [base.get(d)] + [rd["accuracy"].get(d) for rd in rounds],
            }
            for i, d in enumerate(domains)
        ]
        series.append(
            {
                "label": "mean",
                "colour": "#000000",
                "dash": True,
                "values": [base.get("mean")] + [rd["accuracy"].get("mean") for rd in rounds],
            }
        )
        out.append(
            _chart(
                "accuracy", "Clean accuracy per domain (round 0: base model)", "exact match (0–1)", x, series
            )
        )
    attack = _attack_series(r, rounds)
    if attack:
        out.append(
            _chart(
                "attack", "Backdoor ASR and harmful compliance (round 0: base model)", "rate (0–1)", x, attack
            )
        )
    stakes = _stake_series(r, rounds, colours)
    if stakes:
        out.append(_chart("stakes", "Stake per participant (colour: strategy)", "stake (ETH)", x, stakes))
    loss = _loss_series(r, colours)
    if loss:
        out.append(loss)
    xr = [d["round"] for d in rounds]
    if any(d["bytes_up"] is not None for d in rounds):
        out.append(
            _chart(
                "bytes",
                "Bytes on the wire per round",
                "bytes",
                xr,
                [
                    {
                        "label": "uploaded (all committers)",
                        "colour": "#d62728",
                        "values": [d["bytes_up"] for d in rounds],
                    },
                    {
                        "label": "downloaded (all participants)",
                        "colour": "#1f77b4",
                        "values": [d["bytes_down"] for d in rounds],
                    },
                ],
            )
        )
    if any(d["gas_total"] is not None for d in rounds):
        out.append(
            _chart(
                "gas",
                "Gas per round (all transactions)",
                "gas",
                xr,
                [{"label": "gas used", "colour": "#555555", "values": [d["gas_total"] for d in rounds]}],
                bars=True,
            )
        )
    if r.get("privacy"):
        delta = (r["privacy"] or {}).get("delta")
        out.append(
            _chart(
                "epsilon",
                f"Privacy spent: ε (δ = {delta})",
                "ε",
                xr,
                [
                    {
                        "label": "ε (worst participant)",
                        "colour": "#9467bd",
                        "values": [d["epsilon"] for d in rounds],
                    }
                ],
            )
        )
    return out


def _attack_series(r: dict[str, Any], rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    series: list[dict[str, Any]] = []
    base_bd = {(b["trigger"], b["target"]): b for b in (r.get("backdoor") or {}).get("base") or []}
    keys = list(base_bd) or [(b["trigger"], b["target"]) for b in (rounds[0]["backdoor"] if rounds else [])]
    for k, (trigger, target) in enumerate(keys):

        def pick(rows: list[dict[str, Any]], field: str, key: tuple[str, str] = (trigger, target)) -> Any:
            return next((b.get(field) for b in rows if (b.get("trigger"), b.get("target")) == key), None)

        base = base_bd.get((trigger, target), {})
        series.append(
            {
                "label": f"ASR {trigger!r}→{target!r}",
                "colour": ["#d62728", "#ff7f0e"][k % 2],
                "values": [base.get("asr")] + [pick(d["backdoor"], "asr") for d in rounds],
            }
        )
    base_h = {h["set"]: h for h in (r.get("harmful") or {}).get("base") or []}
    sets = list(base_h) or [h["set"] for h in (rounds[0]["harmful"] if rounds else [])]
    for name in sets:

        def hpick(rows: list[dict[str, Any]], field: str, s: str = name) -> Any:
            return next((h.get(field) for h in rows if h.get("set") == s), None)

        series.append(
            {
                "label": f"harmful compliance ({name})",
                "colour": "#8c564b",
                "values": [base_h.get(name, {}).get("compliance")]
                + [hpick(d["harmful"], "compliance") for d in rounds],
            }
        )
        if any(hpick(d["harmful"], "refusal") is not None for d in rounds):
            series.append(
                {
                    "label": f"refusal ({name})",
                    "colour": "#2ca02c",
                    "dash": True,
                    "values": [base_h.get(name, {}).get("refusal")]
                    + [hpick(d["harmful"], "refusal") for d in rounds],
                }
            )
    return series


def _stake_series(
    r: dict[str, Any], rounds: list[dict[str, Any]], colours: dict[str, str]
) -> list[dict[str, Any]]:
    names = sorted({n for d in rounds for n in d["stakes"]})
    if not names:
        return []
    strategies = strategies_of(r)
    initial = (r.get("chain") or {}).get("stake")
    return [
        {
            "label": f"{n} ({strategies.get(n, '?')})",
            "colour": colours.get(n, "#777777"),
            "values": [initial] + [d["stakes"].get(n) for d in rounds],
        }
        for n in names
    ]


def _loss_series(r: dict[str, Any], colours: dict[str, str]) -> dict[str, Any] | None:
    fed = (r.get("losses") or {}).get("federated") or {}
    fed = {n: v for n, v in fed.items() if isinstance(v, list) and v}
    if not fed:
        return None
    steps = max(len(v) for v in fed.values())
    strategies = strategies_of(r)
    series = [
        {
            "label": f"{n} ({strategies.get(n, '?')})",
            "colour": colours.get(n, "#777777"),
            "values": [*v, *([None] * (steps - len(v)))],
        }
        for n, v in sorted(fed.items())
    ]
    return _chart(
        "loss",
        "Training loss, each participant's local steps in order",
        "cross-entropy (nats)",
        list(range(1, steps + 1)),
        series,
        x_label="local step",
    )

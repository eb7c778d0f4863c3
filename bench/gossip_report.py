"""The gossip benchmark's Markdown table: each measurement next to memberlist's formula."""

from __future__ import annotations

import statistics
from typing import Any


def ms(x: float | None) -> str:
    """Seconds as ``"850 ms"`` below 1 s, else ``"1.31 s"``; ``"–"`` for None."""
    return "–" if x is None else f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    """The median of ``key`` over the rows where it is not None (None if there is none)."""
    vals = [x[key] for x in rows if x[key] is not None]
    return statistics.median(vals) if vals else None


def failure_rows(fails: list[dict[str, Any]], cfg: dict[str, Any], f: dict[str, Any], n: int) -> list[str]:
    """The failure-detection and rejoin rows (medians over the rounds)."""
    done = [x for x in fails if x["all_dead"] is not None]
    med = median_of(fails, "all_dead")
    ratio = median_of(fails, "ratio")
    x0 = fails[0]
    each = ", ".join(ms(x["all_dead"]) for x in done)
    if len(done) < len(fails):
        each += f"; {len(fails) - len(done)} round(s) where not every node marked it DEAD"
    rejoin = median_of(fails, "rejoin")
    join_f = f["join"]
    ratio_s = "–" if ratio is None else f"{ratio:.2f}"
    return [
        f"| failure: shutdown() → all {n - 1} others mark it DEAD, median of {len(fails)} | **{ms(med)}** "
        f"({each}) | probe + min = {ms(cfg['probe_interval'])} + {ms(x0['min_bound'])} = "
        f"{ms(x0['expected'])} (bounds: min {ms(x0['min_bound'])}, max = probe + max "
        f"{ms(x0['max_bound'])}; n = {x0['table_n']}, k = {f['suspicion_k']}) | {ratio_s} |",
        f"| failure: first suspicion / first DEAD / median node DEAD (medians) | "
        f"{ms(median_of(fails, 'first_suspect'))} / {ms(median_of(fails, 'first_dead'))} / "
        f"{ms(median_of(fails, 'median_dead'))} (loop lag p99 {ms(max(x['lag']['p99'] for x in fails))}) "
        "| – | – |",
        f"| rejoin: a new node joins node-00 → all {n} list {n} (median of {len(fails)}) | "
        f"{'not converged' if rejoin is None else ms(rejoin)} | {ms(f['join'])} | "
        f"{'–' if rejoin is None else f'{rejoin / join_f:.1f}'} |",
    ]


def header(r: dict[str, Any], pp: str) -> list[str]:
    """The run's settings, the intervals used, and the table's head (``pp``: the push/pull interval)."""
    cfg, f, n = r["config"], r["formula"], r["nodes"]
    return [
        f"gossip: {n} nodes, preset {r['preset']}, scale {r['scale']:g} (intervals ÷ {r['scale']:g}), "
        f"{r['procs']} process(es), {r['loop']}, seed {r['seed']}",
        f"intervals used: gossip {ms(cfg['gossip_interval'])} to {cfg['gossip_nodes']} nodes, probe "
        f"{ms(cfg['probe_interval'])} (timeout {ms(cfg['probe_timeout'])}, {cfg['indirect_checks']} "
        f"indirect), push/pull {pp}, gossip to the dead "
        f"{ms(cfg['gossip_to_the_dead_time'])}, "
        f"tcp timeout {ms(cfg['tcp_timeout'])} (not scaled); retransmit limit {cfg['retransmit_mult']} × "
        f"⌈log10({n + 1})⌉ = {f['retransmit_limit']}; suspicion mult {cfg['suspicion_mult']}, max mult "
        f"{cfg['suspicion_max_timeout_mult']}, k = {f['suspicion_k']}",
        "",
        "| measurement | measured | memberlist formula | measured / formula |",
        "|---|---|---|---|",
    ]


def join_row(r: dict[str, Any], pp: str) -> str:
    """The join-convergence row."""
    cfg, f, n, j = r["config"], r["formula"], r["nodes"], r["join"]
    if j["converged"]:
        jm = (
            f"**{ms(j['seconds'])}** (median node {ms(j['median_node'])}; the {n - 1} join calls took "
            f"{ms(j['joins_took'])}; loop lag p99 {ms(j['lag']['p99'])})"
        )
        ratio = f"{j['seconds'] / f['join']:.1f} (median node {j['median_node'] / f['join']:.1f})"
    else:
        jm = (
            f"**not converged** within {ms(j['timeout'])}: {len(j['unconverged'])} nodes miss "
            f"{j['missing_pairs']} (node, member) pairs of {n * (n - 1)}; median node {ms(j['median_node'])}"
        )
        ratio = "–"
    return (
        f"| join: first join() → all {n} list {n} members | {jm} | {ms(f['join'])} = "
        f"{ms(cfg['gossip_interval'])} × ⌈ln {n} / ln {cfg['gossip_nodes'] + 1}⌉ = {f['gossip_rounds']} "
        f"rounds (repair bound: push/pull {pp}) | {ratio} |"
    )


def idle_rows(idle: dict[str, Any], f: dict[str, Any], n: int) -> list[str]:
    """The idle CPU, packets and health rows."""
    return [
        f"| idle CPU per node ({idle['seconds']:.1f} s window) | **{idle['cpu_pct_per_node']:.3f} % of a "
        f"core** (÷ scale: {idle['cpu_pct_per_node_scale1']:.3f} %; all {n}: "
        f"{idle['cpu_pct_total']:.1f} %; {idle['push_pulls']} push/pulls) | – | – |",
        f"| idle packets received per node | {idle['packets_per_s_per_node']:.2f} /s | "
        f"2 / probe interval = {f['packets_per_s']:.2f} /s | "
        f"{idle['packets_per_s_per_node'] / f['packets_per_s']:.2f} |",
        f"| idle health | {idle['refutations']} refutations, {len(idle['false_deaths'])} false deaths, "
        f"awareness max {idle['awareness_max']}, {idle['suspects_at_end']} open suspicions, "
        f"{idle['bad_or_dropped']} bad/dropped | – | – |",
    ]


def report(r: dict[str, Any]) -> str:
    """The whole table of a run's figures (``gossip_phases.run``)."""
    cfg, f, n = r["config"], r["formula"], r["nodes"]
    pp = ms(cfg["push_pull_interval"]) if cfg["push_pull_interval"] else "off"
    lines = [*header(r, pp), join_row(r, pp)]
    fails = r.get("failure", [])
    if fails:
        lines += failure_rows(fails, cfg, f, n)
    idle = r.get("idle")
    if idle:
        lines += idle_rows(idle, f, n)
    if "refutations_total" in r:
        lines.append(
            f"| whole run | {r['refutations_total']} refutations, {len(r['false_deaths_total'])} false "
            f"deaths ({r['leaves_total']} leave events in all) | – | – |"
        )
    return "\n".join(lines)

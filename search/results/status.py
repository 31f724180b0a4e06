"""`tumor-search status` and the summaries `run` prints at the end."""

from __future__ import annotations

import datetime as dt
import shlex
from typing import Any

import optuna
from optuna.trial import TrialState

from models.footprint import FOOTPRINT_KEYS, describe
from search.constraints import is_feasible, violations
from search.results.pareto import front_rows, front_summary, front_table, is_multi
from search.runtime.optuna_compat import FAIL_REASON_ATTR, HEARTBEAT_MISSED_ATTR
from search.runtime.study import RUNTIME_ATTR, budget, budget_used, describe_storage, open_study


def study_status(study_name: str, storage_url: str | None) -> dict[str, Any]:
    """Counts by state, budget, best trial and running trials, as one mapping."""
    study, config = open_study(study_name, storage_url)
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): 0 for state in TrialState}
    for t in trials:
        counts[t.state.name.lower()] += 1
    now = dt.datetime.now()
    running = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        steps = sorted(t.intermediate_values)
        running.append(
            {
                "number": t.number,
                "params": t.params,
                "started": t.datetime_start.isoformat(timespec="seconds")
                if t.datetime_start
                else None,
                "elapsed_seconds": round((now - t.datetime_start).total_seconds(), 1)
                if t.datetime_start
                else None,
                "epochs_reported": len(steps),
                "last_value": t.intermediate_values[steps[-1]] if steps else None,
                "runtime": t.user_attrs.get(RUNTIME_ATTR),
            }
        )
    multi = is_multi(study)
    failures = [
        {"number": t.number, "reason": t.user_attrs.get(FAIL_REASON_ATTR, "unknown")}
        for t in trials
        if t.state == TrialState.FAIL
    ]
    return {
        "study": study_name,
        "storage": describe_storage(storage_url),
        "metric": config.objective.metric,
        "direction": config.objective.direction,
        "metrics": config.objective.names,
        "budget": budget(study),
        "budget_used": budget_used(trials),
        "counts": counts,
        "best": None if multi else _best(study),
        "front": front_rows(study, config.objective.names) if multi else None,
        "running": running,
        "failed": failures,
        "infeasible": _infeasible(trials),
        "runtimes": _runtimes(trials),
        "heartbeats_missed": _missed(trials),
        "train_best": study.user_attrs.get("train_best"),
        "slurm": _slurm_jobs(study.user_attrs),
    }


def _best(study: optuna.Study) -> dict[str, Any] | None:
    """The best feasible trial of a single-objective study, with its footprint."""
    try:
        b = study.best_trial
    except ValueError:  # none completed, or none feasible
        return None
    return {
        "number": b.number,
        "value": b.value,
        "params": b.params,
        "trial_config": b.user_attrs.get("trial_config"),
        "footprint": {k: b.user_attrs[k] for k in FOOTPRINT_KEYS if k in b.user_attrs},
    }


SLURM_JOBS_SHOWN = 3


def _slurm_jobs(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The study's last Slurm array jobs (`slurm submit`), with each task's state from squeue
    while it is queued or running (``tasks`` empty: it left the queue; None: no squeue)."""
    from search.runtime.slurm import SLURM_ATTR, task_states

    recent = attrs.get(SLURM_ATTR, [])[-SLURM_JOBS_SHOWN:]
    return [{**job, "tasks": task_states(job["job_id"])} for job in recent]


def slurm_line(job: dict[str, Any]) -> str:
    head = f"slurm:    job {job['job_id']} ({job['workers']} workers)"
    tasks = job.get("tasks")
    if tasks is None:
        return f"{head}: squeue cannot be asked from here"
    if not tasks:
        return f"{head}: no longer queued (finished or cancelled; its trials are above)"
    return f"{head}: " + ", ".join(f"task {task} {state}" for task, state in tasks.items())


def runtime_label(runtime: dict[str, Any] | None) -> str:
    """``jax on 1 GPU`` from a trial's runtime attribute."""
    if not runtime:
        return "unknown"
    return f"{runtime.get('backend', '?')} on {runtime.get('device', '?')}"


def _runtimes(trials: list[Any]) -> dict[str, int]:
    """How many trials ran on each backend and device (workers may differ)."""
    counts: dict[str, int] = {}
    for t in trials:
        if RUNTIME_ATTR in t.user_attrs:
            label = runtime_label(t.user_attrs[RUNTIME_ATTR])
            counts[label] = counts.get(label, 0) + 1
    return counts


def _missed(trials: list[Any]) -> dict[str, int]:
    """Heartbeats the storage refused, in all and in how many trials."""
    counts = [int(t.user_attrs.get(HEARTBEAT_MISSED_ATTR) or 0) for t in trials]
    return {"beats": sum(counts), "trials": sum(1 for n in counts if n)}


def _infeasible(trials: list[Any]) -> list[dict[str, Any]]:
    """Completed trials that break a constraint of the objective, with what they break."""
    return [
        {"number": t.number, "violations": violations(t)}
        for t in trials
        if t.state == TrialState.COMPLETE and not is_feasible(t)
    ]


def print_status(status: dict[str, Any]) -> None:
    counts = status["counts"]
    print(f"study:    {status['study']}  ({status['storage']})")
    print(
        f"trials:   {status['budget_used']}/{status['budget']} of the budget; "
        + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    )
    best = status["best"]
    if status.get("front") is not None:
        _print_front(status)
    elif best:
        print(f"best:     {status['metric']} {best['value']:.4f} (trial {best['number']})")
        print(f"          {best['params']}")
        footprint = describe(best.get("footprint") or {})
        if footprint:
            print(f"          {footprint}")
    elif status["counts"]["complete"]:
        print("best:     no feasible trial yet (every completed trial breaks a constraint)")
    else:
        print("best:     no completed trial yet")
    runtimes = status.get("runtimes") or {}
    if runtimes:
        print("ran on:   " + ", ".join(f"{n} trials {label}" for label, n in runtimes.items()))
    for bad in status.get("infeasible", [])[-5:]:
        print(f"infeasible: trial {bad['number']}: {', '.join(bad['violations'])}")
    for r in status["running"]:
        last = (
            f", last {status['metric']} {r['last_value']:.4f}"
            if r["last_value"] is not None
            else ""
        )
        where = f" on {runtime_label(r['runtime'])}" if r.get("runtime") else ""
        print(
            f"running:  trial {r['number']}{where} for {r['elapsed_seconds']:.0f}s, "
            f"{r['epochs_reported']} epochs{last}"
        )
    for f in status["failed"][-5:]:
        print(f"failed:   trial {f['number']}: {f['reason']}")
    missed = status.get("heartbeats_missed") or {}
    if missed.get("beats"):
        print(
            f"heartbeat: {missed['beats']} beats not recorded in {missed['trials']} trials "
            "(the workers' logs say why; a trial whose beats stop for the grace period is failed)"
        )
    for job in status.get("slurm", []):
        print(slurm_line(job))
    tb = status.get("train_best")
    if tb:
        print(test_line(tb))


def _print_front(status: dict[str, Any]) -> None:
    """A multi-objective study's Pareto front, one trial per line."""
    rows = status["front"]
    if not rows:
        done = status["counts"]["complete"]
        print("front:    " + ("no feasible trial yet" if done else "no completed trial yet"))
        return
    print(
        f"front:    {len(rows)} Pareto-optimal trial{'s' if len(rows) != 1 else ''} "
        f"({', '.join(status['metrics'])})"
    )
    for row in rows:
        values = ", ".join(f"{k} {v:.4f}" for k, v in row["values"].items())
        backbone = (row.get("trial_config") or {}).get("backbone", "?")
        print(f"          trial {row['trial']}: {values} ({backbone})")


def test_line(tb: dict[str, Any]) -> str:
    """The held-out result of train-best: accuracy, its 95 % interval and the temperature."""
    ci = (tb.get("intervals") or {}).get("accuracy") or {}
    span = f", 95 % CI {ci['lower']:.4f}-{ci['upper']:.4f}" if ci.get("lower") is not None else ""
    t = (tb.get("calibration") or {}).get("temperature")
    calibrated = f", temperature {t:.3f}" if isinstance(t, int | float) else ""
    return (
        f"test:     accuracy {tb['test']['accuracy']:.4f}{span}{calibrated} "
        f"(train-best of trial {tb.get('trial')})"
    )


def top_trials_table(study: optuna.Study, metric: str, k: int = 5) -> str:
    """The `k` best completed trials (a multi-objective study: its Pareto front)."""
    from search.results.export import completed_trials

    if is_multi(study):
        names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
        return front_table(study, names)

    rows = completed_trials(study)[:k]
    if not rows:
        return "no completed trial"
    lines = [
        f"{'trial':>5}  {metric:>12}  {'epochs':>6}  {'params':>9}  {'s/epoch':>7}  configuration"
    ]
    for t in rows:
        config = t.user_attrs.get("trial_config", t.params)
        head = (
            "linear"
            if config.get("head_depth") == 0
            else f"{config.get('head_depth')}x{config.get('head_width')}"
        )
        desc = (
            f"{config.get('backbone')}, head {head}, dropout {config.get('dropout', 0):.2f}, "
            f"lr {config.get('learning_rate', 0):.1e}"
        )
        broken = violations(t)
        if broken:
            desc += f"  [infeasible: {', '.join(broken)}]"
        lines.append(
            f"{t.number:>5}  {t.value:>12.4f}  {t.user_attrs.get('epochs_run', '-'):>6}  "
            f"{t.user_attrs.get('params', '-'):>9}  {t.user_attrs.get('seconds_per_epoch', '-'):>7}  {desc}"
        )
    return "\n".join(lines)


def dashboard_commands(storage_url: str) -> list[str]:
    """The two ways to browse a storage: ours and optuna-dashboard's own."""
    masked = describe_storage(storage_url)
    quoted = shlex.quote(masked)
    return [
        f"tumor-search dashboard --storage {quoted}",
        f"optuna-dashboard {quoted}",
    ]


def progress_line(study: optuna.Study, total: int) -> str:
    """One line on a study's progress: trials done of the budget and the best so far."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    try:
        if is_multi(study):
            return f"study {study.study_name}: {done}/{total} trials done, {front_summary(study)}"
        best = study.best_trial
        best_text = f"best {best.value:.4f} (trial {best.number})"
    except ValueError:  # none completed, or (with constraints) none feasible
        complete = any(t.state == TrialState.COMPLETE for t in trials)
        best_text = "no feasible trial yet" if complete else "no completed trial yet"
    return f"study {study.study_name}: {done}/{total} trials done, {best_text}"

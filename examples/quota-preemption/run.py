"""Two teams, one node: team A borrows team B's idle quota, team B takes it back (README.md).

Runs the scenario against a running mesh (`mlmesh up`; MLMESH_STATE_DIR picks which) with the
`mlmesh` CLI, printing each step and every job state change, then checks the outcome the README
describes. Exit status 0 when it matched, 1 when it did not, 2 on a setup error.

    mlmesh up
    python examples/quota-preemption/run.py [--summary out.json] [--same-priority]

What it does:
1. reads the node's CPU capacity C (`mlmesh nodes list --json`) and sizes everything from it:
   queues team-a and team-b with C/2 nominal CPU each, team-a may borrow C/2 more; team A's job
   asks for 3C/4, team B's for C/2 (the job files are written for C = 2 CPUs, and copied with
   rescaled requests otherwise);
2. creates the queues as an admin (`mlmesh queues create`, then `mlmesh queues update team-a
   --borrow-cpu`);
3. submits team A's job with a team-a token, waits until it runs (borrowing);
4. submits team B's job with a team-b token: B is within its quota, the node is full, so the
   scheduler preempts A's borrowing, lower-priority job; A goes back to PENDING, B runs;
5. waits until both succeeded (A runs again once B is done) and prints both jobs' histories.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLMESH = [sys.executable, "-m", "mlmesh.cli.main"]
TEAM_A_JOB = HERE / "team-a-borrower.yaml"
TEAM_B_JOB = HERE / "team-b-owner.yaml"
WRITTEN_FOR_CPU_MILLIS = 2000  # the job files' requests: 1500m (A) and 1000m (B) of a 2-CPU node
T0 = time.monotonic()


class ScenarioError(Exception):
    pass


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def mlmesh(*args: str, token: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS=os.environ.get("COLUMNS", "160"))
    if token:
        env["MLMESH_TOKEN"] = token
    done = subprocess.run([*MLMESH, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise ScenarioError(f"mlmesh {' '.join(args)} -> exit {done.returncode}: {done.stderr.strip()}")
    return done


def mlmesh_json(*args: str):
    return json.loads(mlmesh(*args, "--json").stdout)


def short(state: str) -> str:
    return state.removeprefix("JOB_STATE_")


# --- setup -----------------------------------------------------------------------------------------


def node_cpu_millis() -> int:
    nodes = [n for n in mlmesh_json("nodes", "list") if n.get("state") == "NODE_STATE_READY"]
    if not nodes:
        raise ScenarioError("no READY node: is the mesh up (`mlmesh status`)?")
    if len(nodes) > 1:
        say(f"note: {len(nodes)} nodes; the scenario is sized for the largest one and assumes one node")
    return max(int(n["capacity"].get("cpu_millis", 0)) for n in nodes)


def team_tokens() -> dict[str, str | None]:
    """Developer tokens for team-a and team-b, minted with the local mesh's signing key (as a real
    deployment's identity provider would issue them). Without that key: the caller's token (an
    admin's may submit for any team: the job files name their team)."""
    from mlmesh.common.auth import mint_token
    from mlmesh.local import mesh

    key = mesh.state_dir() / "auth" / "signing_key.pem"
    if not key.is_file():
        say(f"no {key}: submitting with your own token (it must be an admin's)")
        return {"team-a": None, "team-b": None}
    pem = key.read_bytes()
    return {
        team: mint_token(pem, subject=f"{team}-user", team=team, roles=["developer"], ttl_s=3600)
        for team in ("team-a", "team-b")
    }


def create_queues(capacity: int) -> None:
    half = capacity // 2
    for team in ("team-a", "team-b"):
        args = ["queues", "create", team, "--team", team, "--gpus", "0", "--cpu", f"{half}m", "--default"]
        done = mlmesh(*args, check=False)
        if done.returncode != 0 and "already" not in done.stderr.lower():
            raise ScenarioError(f"mlmesh {' '.join(args)}: {done.stderr.strip()}")
        if done.returncode != 0:  # a second run on the same mesh: reset the nominal quota
            mlmesh("queues", "update", team, "--cpu", f"{half}m", "--gpus", "0")
        say(f"queue {team}: nominal {half}m CPU (mlmesh {' '.join(args)})")
    mlmesh("queues", "update", "team-a", "--borrow-cpu", f"{half}m")
    say(f"queue team-a: may borrow {half}m CPU beyond nominal (mlmesh queues update team-a --borrow-cpu {half}m)")
    say("mlmesh queues list:\n" + mlmesh("queues", "list").stdout.rstrip())


def job_files(capacity: int, workdir: Path, same_priority: bool) -> tuple[Path, Path]:
    """The shipped job files on a 2-CPU node; elsewhere, copies with requests of 3C/4 and C/2.
    With `same_priority`, team A's job runs in team B's class (inference) too."""
    if capacity == WRITTEN_FOR_CPU_MILLIS and not same_priority:
        return TEAM_A_JOB, TEAM_B_JOB
    out = []
    for src, millis in ((TEAM_A_JOB, capacity * 3 // 4), (TEAM_B_JOB, capacity // 2)):
        text = re.sub(r"(?m)^(  cpu: )\S+", rf"\g<1>{millis}m", src.read_text(), count=1)
        if same_priority:
            text = re.sub(r"(?m)^priority_class: \S+", "priority_class: inference", text, count=1)
        dst = workdir / src.name
        dst.write_text(text)
        out.append(dst)
    if capacity != WRITTEN_FOR_CPU_MILLIS:
        say(
            f"node has {capacity}m CPU, not {WRITTEN_FOR_CPU_MILLIS}m: requests rescaled to "
            f"A {capacity * 3 // 4}m, B {capacity // 2}m"
        )
    if same_priority:
        say("variant: team A's job runs in class inference, like team B's (only quota reclaim can preempt it)")
    return out[0], out[1]


# --- the scenario ----------------------------------------------------------------------------------


def submit(path: Path, token: str | None) -> str:
    out = mlmesh("submit", str(path), token=token).stdout  # the id alone when stdout is not a terminal
    m = re.search(r"\b(j[0-9a-f]{15})\b", out)
    if not m:
        raise ScenarioError(f"cannot find the job id in: {out!r}")
    return m.group(1)


def watcher(job_id: str, team: str, token: str | None) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="160")
    if token:
        env["MLMESH_TOKEN"] = token
    return subprocess.Popen([*MLMESH, "jobs", "watch", job_id, "--team", team], env=env)


def get(job_id: str) -> dict:
    return mlmesh_json("jobs", "get", job_id)


def wait_for(what: str, predicate, timeout_s: float, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise ScenarioError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def history(job: dict) -> list[dict]:
    return job.get("status", {}).get("history", [])


def print_history(label: str, job: dict) -> None:
    say(f"{label} {job['meta']['id']} history:")
    for h in history(job):
        frm = short(h.get("from_state", "")) or "-"
        msg = f": {h['message']}" if h.get("message") else ""
        print(
            f"    {h['transition_time'][11:23]}  attempt {h.get('attempt', 1)}  {frm:>9} -> {short(h['to_state']):<9}"
            f"  {h.get('reason', '')}{msg}",
            flush=True,
        )


def check_outcome(a: dict, b: dict, reason: str) -> list[str]:
    """What the README promises; returns the differences (empty: as described)."""
    problems = []
    a_steps = [(short(h["to_state"]), h.get("reason", "")) for h in history(a)]
    b_steps = [short(h["to_state"]) for h in history(b)]
    if a["status"]["state"] != "JOB_STATE_SUCCEEDED" or b["status"]["state"] != "JOB_STATE_SUCCEEDED":
        problems.append(f"final states A {a['status']['state']}, B {b['status']['state']} (both should succeed)")
    preempted = [i for i, (s, _) in enumerate(a_steps) if s == "PREEMPTED"]
    if len(preempted) != 1:
        problems.append(f"A was preempted {len(preempted)} times (expected once): {a_steps}")
    else:
        i = preempted[0]
        if a_steps[i][1] != reason:
            problems.append(f"A preempted with reason {a_steps[i][1]!r}, expected {reason!r}")
        if [s for s, _ in a_steps[i + 1 : i + 4]] != ["PENDING", "ADMITTED", "RUNNING"]:
            problems.append(f"after PREEMPTED A should go PENDING -> ADMITTED -> RUNNING: {a_steps}")
    if int(a["status"].get("attempt", 1)) != 2:
        problems.append(f"A ended on attempt {a['status'].get('attempt')} (expected 2)")
    if "PREEMPTED" in b_steps or b_steps.count("ADMITTED") != 1:
        problems.append(f"B should be admitted once and never preempted: {b_steps}")
    b_admit = b["status"].get("admit_time", "")
    a_finish = a["status"].get("finish_time", "")
    if not b_admit or not a_finish or b_admit >= a_finish:
        problems.append(f"B was admitted at {b_admit}, not before A finished ({a_finish})")
    return problems


def run(summary: Path | None, same_priority: bool) -> int:
    capacity = node_cpu_millis()
    say(f"node CPU capacity: {capacity}m (the agent advertises the host's cores)")
    tokens = team_tokens()
    create_queues(capacity)
    with tempfile.TemporaryDirectory(prefix="quota-preemption-") as tmp:
        a_file, b_file = job_files(capacity, Path(tmp), same_priority)

        say("team A submits its job (more than its nominal quota: it borrows team B's idle share)")
        a_id = submit(a_file, tokens["team-a"])
        # Every state change as it happens, as each team sees it. `--team` matters with an admin token:
        # without it, watch looks only at the caller's own team and prints nothing for these ids.
        watch = watcher(a_id, "team-a", tokens["team-a"])
        try:
            wait_for("team A's job to run", lambda: get(a_id)["status"]["state"] == "JOB_STATE_RUNNING", 120)
            a = get(a_id)
            say(f"team A's job runs; borrowing={a['status'].get('borrowing', False)}")
            say("mlmesh queues list:\n" + mlmesh("queues", "list").stdout.rstrip())

            say("team B submits its job (within its own nominal quota; the node has no room left)")
            b_id = submit(b_file, tokens["team-b"])
            watch_b = watcher(b_id, "team-b", tokens["team-b"])
            try:
                wait_for(
                    "team A's job to be preempted",
                    lambda: any(short(h["to_state"]) == "PREEMPTED" for h in history(get(a_id))),
                    60,
                )
                b = wait_for(
                    "team B's job to run",
                    lambda: (j := get(b_id))["status"]["state"] in ("JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED") and j,
                    90,
                )
                say(
                    f"team B's job {short(b['status']['state'])}; team A's job is {short(get(a_id)['status']['state'])}"
                )
                done = mlmesh("jobs", "explain", a_id, check=False)
                explain = (done.stdout or done.stderr).rstrip()
                say("why team A's job waits (mlmesh jobs explain):\n" + explain)
                wait_for(
                    "both jobs to succeed",
                    lambda: all(get(j)["status"]["state"] == "JOB_STATE_SUCCEEDED" for j in (a_id, b_id)),
                    180,
                    poll_s=1.0,
                )
            finally:
                watch_b.terminate()
                watch_b.wait(10)
        finally:
            watch.terminate()
            watch.wait(10)
    a, b = get(a_id), get(b_id)
    print_history("team A's job", a)
    print_history("team B's job", b)
    # B's class outranks A's: the victim is chosen for priority (HigherPriority). At equal priority
    # only the borrowed quota makes A a victim (ReclaimQuota).
    reason = "ReclaimQuota" if same_priority else "HigherPriority"
    problems = check_outcome(a, b, reason)
    if summary is not None:
        out = {"team_a_job": a_id, "team_b_job": b_id, "problems": problems, "explain_a_while_b_runs": explain}
        summary.write_text(json.dumps(out, indent=2))
    if problems:
        say("the outcome differs from README.md:\n  - " + "\n  - ".join(problems))
        return 1
    say(f"outcome as README.md describes: A borrowed, was preempted ({reason}), requeued, and ran again after B")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, help="write the job ids and any differences here (JSON)")
    parser.add_argument(
        "--same-priority",
        action="store_true",
        help="team A's job in team B's class (inference): preemption by quota reclaim alone (README: variant)",
    )
    args = parser.parse_args()
    try:
        return run(args.summary, args.same_priority)
    except ScenarioError as exc:
        say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())

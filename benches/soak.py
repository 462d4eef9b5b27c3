#!/usr/bin/env python3
"""Crash-consistency soak: real pipelines SIGKILLed at random instants, re-run, validated.

Run through benches/soak.sh (it builds, starts the servers and sets the environment). For each
target, TRIALS trials; each trial starts from an empty target and runs the pipeline with one
randomly chosen stage SIGKILLed at a random instant inside the time a clean run takes, again and
again (keeping what each run did) until KILLS kills have landed, then runs the same command to
completion and validates source against target. Reports per target:
trials, kill points (per stage), kills that came after the run had already finished, rows or
files lost and duplicated (from the validator's findings), and validate exit codes.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

BIN = os.environ["FERRY_BIN"]
WORK = os.environ["SOAK_WORK"]
TRIALS = int(os.environ.get("TRIALS", "40"))
KILLS = int(os.environ.get("KILLS", "3"))
SEED = int(os.environ.get("SEED", str(int(time.time()))))
rng = random.Random(SEED)


def b(name):
    return os.path.join(BIN, name)


def run_pipeline(stages, cwd, kill=None):
    """Run stages connected by pipes; kill=(stage index, seconds) SIGKILLs that stage then.
    Returns (exit codes, whether the kill landed before the stage ended, seconds taken)."""
    started = time.monotonic()
    procs = []
    prev = subprocess.DEVNULL
    for i, argv in enumerate(stages):
        err = open(os.path.join(cwd, f"stage{i}.stderr"), "wb")
        p = subprocess.Popen(argv, cwd=cwd, stdin=prev, stdout=subprocess.PIPE, stderr=err)
        err.close()
        if prev is not subprocess.DEVNULL:
            prev.close()
        prev = p.stdout
        procs.append(p)
    # Read the last stage's output (acknowledgements, results) while waiting, so it never blocks.
    reader = threading.Thread(target=prev.read, daemon=True)
    reader.start()
    landed = False
    if kill is not None:
        idx, at = kill
        deadline = time.monotonic() + at
        while time.monotonic() < deadline and procs[idx].poll() is None:
            time.sleep(0.002)
        if procs[idx].poll() is None:
            procs[idx].send_signal(signal.SIGKILL)
            landed = True
    codes = [p.wait() for p in procs]
    reader.join()
    return codes, landed, time.monotonic() - started


def validate(args, cwd):
    r = subprocess.run([b("ferry-validate"), *args, "-q"], cwd=cwd, capture_output=True, text=True)
    summary = {}
    for line in r.stdout.splitlines():
        if '"SUMMARY"' in line:
            summary = json.loads(line)
    return r.returncode, summary


def soak(name, fresh, cwd):
    """One target: TRIALS trials of KILLS random kills, a completing re-run, a validation.
    fresh() empties the target for a new trial and returns (stages, validate arguments)."""
    os.makedirs(cwd, exist_ok=True)
    stages, validate_args = fresh()
    codes, _, clean = run_pipeline(stages, cwd)
    assert all(c == 0 for c in codes), f"{name}: a clean run failed: {codes}"
    code, _ = validate(validate_args, cwd)
    assert code == 0, f"{name}: a clean run does not validate"
    result = {
        "target": name,
        "clean_run_s": round(clean, 2),
        "trials": 0,
        "kill_points": 0,
        "kills_per_stage": {os.path.basename(s[0]): 0 for s in stages},
        "kills_after_the_end": 0,
        "lost": 0,
        "duplicated": 0,
        "other_findings": 0,
        "validate_exit_codes": {},
        "rerun_failures": 0,
    }
    for trial in range(TRIALS):
        stages, validate_args = fresh()
        # KILLS kills that land (a stage that had already ended when its instant came is a miss:
        # the run finished, and the trial goes on from there).
        # The instants are drawn inside the time the last whole run took: a re-run has less to do.
        landed_here, tries, span = 0, 0, clean
        while landed_here < KILLS and tries < 10 * KILLS:
            tries += 1
            idx = rng.randrange(len(stages))
            at = rng.uniform(0.0, span)
            _, landed, took = run_pipeline(stages, cwd, (idx, at))
            if not landed:
                span = took
            if landed:
                landed_here += 1
                result["kill_points"] += 1
                result["kills_per_stage"][os.path.basename(stages[idx][0])] += 1
            else:
                result["kills_after_the_end"] += 1
        codes, _, _ = run_pipeline(stages, cwd)
        if any(c != 0 for c in codes):
            result["rerun_failures"] += 1
            said = []
            for i, c in enumerate(codes):
                if c != 0:
                    with open(os.path.join(cwd, f"stage{i}.stderr"), errors="replace") as f:
                        said.append(f"{os.path.basename(stages[i][0])} exit {c}: " + f.read().strip()[-400:])
            result.setdefault("rerun_errors", []).append(" | ".join(said))
            # A re-run after a failed re-run must still complete.
            run_pipeline(stages, cwd)
        code, summary = validate(validate_args, cwd)
        result["trials"] += 1
        result["validate_exit_codes"][str(code)] = result["validate_exit_codes"].get(str(code), 0) + 1
        findings = summary.get("findings", {})
        result["lost"] += findings.get("missing", 0)
        result["duplicated"] += findings.get("extra", 0) + findings.get("duplicate", 0)
        result["other_findings"] += sum(
            n for k, n in findings.items()
            if k not in ("missing", "extra", "duplicate") and not k.endswith("_in_source")
        )
        print(f"{name}: trial {trial + 1}/{TRIALS}: validate {code} {findings}", file=sys.stderr, flush=True)
    return result


def forget_state(cwd):
    state = os.path.join(cwd, ".ferry", "state.db")
    for f in (state, state + "-wal", state + "-shm"):
        if os.path.exists(f):
            os.remove(f)


def main():
    targets = os.environ.get("TARGETS", "sqlite d1 postgres s3").split()
    src = os.environ["SOAK_SQLITE_SRC"]
    source = f"sqlite:{src}"
    export = [b("ferry-export"), source, "--state-every", "2000"]
    transform = [b("ferry-transform"), "--dialect", "sqlite"]
    results = []
    trial = [0]

    def next_trial(cwd):
        trial[0] += 1
        forget_state(cwd)
        return trial[0]

    if "sqlite" in targets:
        cwd = os.path.join(WORK, "sqlite")

        def fresh():
            for f in os.listdir(cwd):
                if f.startswith("dst"):
                    os.remove(os.path.join(cwd, f))
            dst = os.path.join(cwd, f"dst{next_trial(cwd)}.db")
            return [export, transform, [b("ferry-import"), f"sqlite:{dst}", "--create"]], [source, f"sqlite:{dst}"]

        results.append(soak("sqlite", fresh, cwd))
    if "d1" in targets:
        cwd = os.path.join(WORK, "d1run")

        def fresh():
            dst = f"d1://soak/t{next_trial(cwd)}"
            return [export, [b("ferry-import"), dst, "--create"]], [source, dst]

        results.append(soak("d1", fresh, cwd))
    if "postgres" in targets:
        cwd = os.path.join(WORK, "pg")
        base = os.environ["SOAK_PG"]

        def fresh():
            n = next_trial(cwd)
            for sql in (f"DROP DATABASE IF EXISTS soak{n - 1}", f"CREATE DATABASE soak{n}"):
                subprocess.run(["psql", "-q", f"{base}/postgres", "-c", sql], check=True, capture_output=True)
            dst = f"{base}/soak{n}"
            return [export, [b("ferry-import"), dst, "--create"]], [source, dst]

        results.append(soak("postgres", fresh, cwd))
    if "s3" in targets:
        cwd = os.path.join(WORK, "s3run")
        tree = os.environ["SOAK_TREE"]

        def fresh():
            dst = f"s3://soak/t{next_trial(cwd)}"
            return [[b("ferry-export"), f"dir:{tree}"], [b("ferry-import"), dst]], [f"dir:{tree}", dst]

        results.append(soak("s3", fresh, cwd))
    print(json.dumps({"seed": SEED, "trials_per_target": TRIALS, "kills_per_trial": KILLS, "results": results}))


if __name__ == "__main__":
    main()

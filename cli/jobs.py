"""marketctl submit, jobs, result, cancel: the job owner's commands."""
from __future__ import annotations

import asyncio
import json
import sys

from cli.limits import limit_fields
from cli.money import format_credits, parse_credits
from cli.paging import ask_page, print_next
from cli.requests import requester_as, send_and_check
from cli.stored_results import result_bytes, save_result
from common.errors import MarketError
from contracts.package import PackageError, new_job_id, parse_target, result_as_json, submission_payload


class UsageError(MarketError):
    exit_code = 2


def parse_args_json(text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--args is not valid JSON: {e.msg} at column {e.colno}") from e


def build_submission(settings, target: str, name: str, price_text: str, args_text: str | None,
                     max_attempts: int, unsafe_no_sandbox: bool = False, network: bool = False,
                     request_id: str | None = None, replicas: int = 1) -> dict:
    """Everything `submit` checks before it publishes anything (exit code 2 on any of it)."""
    price = parse_credits(price_text, what="price")
    if not 1 <= max_attempts <= 100:
        raise UsageError("--max-attempts must be between 1 and 100")
    if not 1 <= replicas <= 3:
        raise UsageError("--replicas must be 1, 2 or 3")
    args = parse_args_json(args_text)
    path, entry = parse_target(target)
    # the module's top-level code runs: in the sandbox, as a worker would run it
    from sandbox import CONFINED, UNSAFE
    from sandbox.build import build_file_confined
    package = build_file_confined(path, entry, args, max_bytes=settings.max_blob_bytes,
                                  confinement=UNSAFE if unsafe_no_sandbox else CONFINED)
    # a script's retry with the same --request-id submits the same job, not a second one
    job_id = f"job-{request_id.replace('-', '')[-12:]}" if request_id else new_job_id()
    return submission_payload(package, job_id=job_id, name=name, price=price, max_attempts=max_attempts,
                              network=network, replicas=replicas)


async def ask(settings, account: str, query: str, args: dict | None = None):
    async with requester_as(settings, account) as requester:
        return await requester.ask(query, args, user_id=account, timeout=settings.reply_timeout)


def cmd_submit(settings, args) -> int:
    limits = limit_fields(args)  # bad limits are refused before the module is even loaded
    try:
        payload = build_submission(settings, args.target, args.name, args.price, args.args, args.max_attempts,
                                   unsafe_no_sandbox=args.unsafe_no_sandbox, network=args.network,
                                   request_id=args.request_id, replicas=args.replicas)
    except PackageError as e:
        raise UsageError(str(e)) from e
    if getattr(args, "inputs", None):
        # issue 17: checked, then uploaded before the submission that names them is published
        from cli.inputs import check_input_files, upload_inputs

        payload["inputs"] = upload_inputs(settings, args.account, check_input_files(settings, args.inputs))
    payload.update(limits)
    reply = send_and_check(settings, args.account, "job.submitted", payload, args.request_id)
    job_id = payload["job_id"]
    if not args.wait:
        status = next((v["type"].split(".")[1] for v in reply["verdicts"] if v["type"] == "job.accepted"), "recorded")
        if args.json:
            print(json.dumps({"job_id": job_id, "status": status}))
        else:
            print(job_id)
        return 0
    job = wait_for_job(settings, args.account, job_id, quiet=args.json)
    if args.json:
        out = {"job_id": job_id, "status": job["status"]}
        if job["status"] == "completed":
            out["result"] = _result_value(settings, args.account, job_id)
        print(json.dumps(out))
    else:
        _print_outcome(settings, args.account, job)
    return 0 if job["status"] == "completed" else 1


def wait_for_job(settings, account: str, job_id: str, quiet: bool = False) -> dict:
    """Poll the job until it ends, drawing a progress line on a terminal."""
    return asyncio.run(_poll_job(settings, account, job_id, quiet))


async def _poll_job(settings, account: str, job_id: str, quiet: bool) -> dict:
    from ledger.fold import TERMINAL_JOB_STATES  # only here: marketctl's other commands need not load the fold

    last = None
    # one connection for the whole wait, not one per poll
    async with requester_as(settings, account) as requester:
        while True:
            job = await requester.ask("job", {"job_id": job_id}, user_id=account, timeout=settings.reply_timeout)
            line = (f"\r{job_id}  {job['status']:<12} checkpoints {job['checkpoint']:>4}  "
                    f"executed {job['executed_ms'] / 1000:8.3f} s  worker {job['worker_id'] or '-':<16}")
            if not quiet and line != last and sys.stderr.isatty():
                print(line, end="", file=sys.stderr, flush=True)
            elif not quiet and line != last:
                print(line.strip(), file=sys.stderr, flush=True)
            last = line
            if job["status"] in TERMINAL_JOB_STATES:
                if not quiet and sys.stderr.isatty():
                    print(file=sys.stderr)
                return job
            await asyncio.sleep(0.3)


def _result_value(settings, account: str, job_id: str):
    answer = asyncio.run(ask(settings, account, "result", {"job_id": job_id}))
    return result_as_json(result_bytes(answer))


def _print_outcome(settings, account: str, job: dict) -> None:
    if job["status"] == "completed":
        print(json.dumps(_result_value(settings, account, job["job_id"])))
    else:
        # why it failed (a limit, its attempts), as `marketctl logs` says it
        reason = asyncio.run(ask(settings, account, "job_logs", {"job_id": job["job_id"]}))["reason"]
        print(f"job {job['job_id']} {job['status']}" + (f": {reason}" if reason else ""), file=sys.stderr)
        if job.get("error"):
            print(job["error"].rstrip(), file=sys.stderr)


def cmd_jobs(settings, args) -> int:
    jobs, cursor = asyncio.run(ask_page(settings, args.account, "jobs", {}, args))
    if args.json:
        print(json.dumps(jobs, indent=2))
        print_next(cursor, "jobs", args)
        return 0
    print(f"{'job':<18} {'name':<20} {'price/h':>12} {'status':<12} {'net':<3} {'ckpts':>5} {'executed':>10} "
          f"{'finished':<20} worker")
    from cli.maps import folded  # a map's chunks show under it

    for job, under_map in folded(jobs):
        if under_map:
            print(f"  {job['job_id']:<16} chunk {job['chunk']:<4} {job['status']:<12} ckpts {job['checkpoint']:>4} "
                  f"{job['executed_ms'] / 1000:>9.3f}s worker {job['worker_id'] or '-'}")
            continue
        print(f"{job['job_id']:<18} {job['name'][:20]:<20} {format_credits(job['price']):>12} {job['status']:<12} "
              f"{'yes' if job['network'] else '-':<3} "
              f"{job['checkpoint']:>5} {job['executed_ms'] / 1000:>9.3f}s {(job['finished_at'] or '-')[:19]:<20} "
              f"{job['worker_id'] or '-'}")
        if job.get("detail"):
            print(f"{'':<18} {job['detail']}")
    if not jobs:
        print(f"(no jobs of {args.account})")
    print_next(cursor, "jobs", args)
    return 0


def cmd_result(settings, args) -> int:
    answer = asyncio.run(ask(settings, args.account, "result", {"job_id": args.job_id}))
    if "map" in answer:
        from cli.maps import print_map_result

        return print_map_result(settings, args, answer)
    if getattr(args, "artifacts", None):
        from cli.logs import save_artifacts
        save_artifacts(settings, args.account, args.job_id, args.artifacts)
    if args.raw:
        size = save_result(answer, args.raw)  # a large one is fetched from the blob store, never held whole
        print(f"wrote {size} bytes (sha256 {answer['sha256']}) to {args.raw}")
        return 0
    data = result_bytes(answer)
    try:
        value = result_as_json(data)
    except PackageError as e:
        raise UsageError(str(e)) from e
    print(json.dumps({"job_id": args.job_id, "result": value}) if args.json else json.dumps(value))
    return 0


def cmd_cancel(settings, args) -> int:
    send_and_check(settings, args.account, "job.cancelled", {"job_id": args.job_id}, args.request_id)
    print(f"job {args.job_id} cancelled")
    return 0


def cmd_workers(settings, args) -> int:
    workers, cursor = asyncio.run(ask_page(settings, args.account, "workers", {}, args))
    if args.json:
        print(json.dumps(workers, indent=2))
        print_next(cursor, "workers", args)
        return 0
    print(f"{'worker':<20} {'owner':<14} {'speed (kops)':>12} {'measured at':<21} {'slots':>5} {'state':<8} mismatches")
    for w in workers:
        speed = "unmeasured" if w["speed"] is None else str(w["speed"])
        print(f"{w['worker_id'] or '(other)':<20} {w['owner'] or '(other)':<14} {speed:>12} "
              f"{(w['speed_measured_at'] or '-')[:19]:<21} {w['slots']:>5} {w['state']:<8} "
              f"{'-' if w.get('mismatches') is None else w['mismatches']}")
        if w.get("last_dispute"):
            last = w["last_dispute"]
            print(f"{'':<20} speed disputed {w['disputes']} time(s); last {last['at'][:19]}: probed {last['probed']} "
                  f"kops, delivered {last['delivered']} kops (re-probed at once)")
    print("speed: thousands of the probe's multiply-adds per second of executed time (higher is faster)")
    print_next(cursor, "workers", args)
    return 0


"""marketctl report, advise-price: the market report and the price advisor."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from agents.scheduler.advisor import (MINIMUM_PRICE, Advice, Market, NotPossible, ReportError, advise,
                                      read_market)
from cli.jobs import UsageError, ask
from cli.money import format_credits
from ledger.report import SCHEMA_FILE, schema_text

#: what a speed means, wherever the command line asks for one
SPEED_UNIT = ("kops: thousands of the speed probe's multiply-adds per second of executed time "
              "(higher is faster), as `marketctl workers` prints them")
#: seconds xmllint may take to validate a report
VALIDATE_TIMEOUT = 120


def register(commands, command) -> None:
    """Add ``report`` and ``advise-price`` to marketctl's commands."""
    sub = command("report", cmd_report, "the market report as XML, made for your account: workers, jobs and "
                  "dispatches; other accounts' items under ids that change with every report")
    sub.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead of standard output")
    sub.add_argument("--schema", action="store_true",
                     help="print the XML schema (XSD) reports validate against, instead of a report")
    sub = command("advise-price", cmd_advise_price,
                  "the smallest price per hour at which a new job gets a worker at least as fast as --speed "
                  "(no worker is that fast: prints NotPossible, exit code 3)")
    sub.add_argument("--speed", required=True, metavar="S",
                     help=f"the speed wanted, a positive integer in {SPEED_UNIT}")
    sub.add_argument("--report", metavar="FILE",
                     help="advise from this report (from `marketctl report -o FILE`) instead of asking the market")
    sub.add_argument("--replicas", type=int, default=1, choices=(1, 2, 3),
                     help="advise for a job submitted with --replicas N: each replica needs such a worker, and "
                          "the price is paid per replica (N times in all)")
    sub.add_argument("--json", action="store_true", help="print JSON; prices in credits and in micro-credits")


# ---- report -------------------------------------------------------------------------

def cmd_report(settings, args) -> int:
    text = schema_text() if args.schema else asyncio.run(ask(settings, args.account, "report"))
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write {args.output}: {e.strerror}") from e
        print(f"wrote the {'schema' if args.schema else 'market report'} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


# ---- advise-price ---------------------------------------------------------------------

def parse_speed(text: str) -> int:
    """``"1200"`` -> 1200; anything but a positive integer is a usage error."""
    cleaned = text.strip()
    if not (cleaned.isascii() and cleaned.isdigit()) or int(cleaned) < 1:
        raise UsageError(f"--speed must be a positive integer number of kops (as `marketctl workers` prints), "
                         f"not {text!r}")
    return int(cleaned)


def load_report_file(path: str) -> Market:
    """Read a report file: it must be XML, and valid against the published schema."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    try:
        market = read_market(data)
    except ReportError as e:
        raise ReportError(f"{path}: {e}") from e
    validate_report_file(path)
    return market


def validate_report_file(path: str) -> None:
    """Validate with ``xmllint --schema`` (Debian's libxml2-utils): raises ReportError with its first complaint."""
    xmllint = shutil.which("xmllint")
    if xmllint is None:
        raise ReportError(f"cannot validate {path}: xmllint not found (install Debian's libxml2-utils)")
    # absolute, so that a file named like an option is read as a file
    target = str(Path(path).absolute())
    with resources.as_file(resources.files("ledger").joinpath(SCHEMA_FILE)) as schema:
        try:
            done = subprocess.run([xmllint, "--noout", "--nonet", "--schema", str(schema), target],
                                  capture_output=True, text=True, timeout=VALIDATE_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise ReportError(f"{path}: validation took more than {VALIDATE_TIMEOUT} s") from e
    if done.returncode != 0:
        complaints = [line.strip() for line in done.stderr.splitlines()
                      if line.strip() and not line.strip().endswith("fails to validate")]
        first = complaints[0] if complaints else f"xmllint exit code {done.returncode}"
        # "FILE:13: element ...: Schemas validity error : ..." -> "line 13: ..."
        first = re.sub(r"^(\d+):", r"line \1:", first.removeprefix(f"{target}:"))
        raise ReportError(f"{path} is not a valid market report: {first}")


#: what the original price advisor printed on stdout when no worker was fast enough
NOT_POSSIBLE_WORD = "NotPossible"


def cmd_advise_price(settings, args) -> int:
    speed = parse_speed(args.speed)
    if args.report:
        market = load_report_file(args.report)
    else:
        market = read_market(asyncio.run(ask(settings, args.account, "report")).encode("utf-8"))
    try:
        advice = advise(market, speed, args.replicas)
    except NotPossible as e:
        if args.json:
            print(json.dumps({"possible": False, "speed": speed, "reason": str(e)}))
        else:
            # the original advisor script's answer word: scripts written for it read stdout
            print(NOT_POSSIBLE_WORD)
        raise
    if args.json:
        print(json.dumps(advice_json(advice, market), indent=2))
    else:
        print(format_advice(advice, market))
    return 0


def advice_json(advice: Advice, market: Market) -> dict:
    return {"possible": True, "speed": advice.speed, "price": format_credits(advice.price),
            "price_micro": advice.price, "fast_slots": advice.fast_slots, "competing_jobs": advice.competing,
            "nth_price": None if advice.nth_price is None else format_credits(advice.nth_price),
            "matched_speed": advice.matched_speed, "ledger_seq": market.ledger_seq,
            "replicas": advice.replicas, "total_price": format_credits(advice.total_price),
            "total_price_micro": advice.total_price,
            "report_generated_at": market.generated_at}


def format_advice(advice: Advice, market: Market) -> str:
    if advice.nth_price is None:
        why = (f"fewer jobs compete ({advice.competing}, ready or running) than there are worker slots "
               f"at least {advice.speed} kops fast ({advice.fast_slots}): the market's minimum price will do")
    else:
        why = (f"{advice.fast_slots} worker slot(s) are at least {advice.speed} kops fast and {advice.competing} "
               f"jobs compete (ready or running); the {_ordinal(advice.fast_slots)} highest price is "
               f"{format_credits(advice.nth_price)}, and a new job at that price loses the tie by age")
    matched = f"at this price the scheduler's matching gives a new job a worker of {advice.matched_speed} kops"
    if advice.price > MINIMUM_PRICE:
        matched += "; one micro-credit less would not be enough"
    replicas = (f"  per replica: {advice.replicas} replicas pay {format_credits(advice.total_price)} credits per "
                "hour of execution in all (once more for a tie-breaker)",) if advice.replicas > 1 else ()
    return "\n".join([
        f"advised price: {format_credits(advice.price)} credits per hour",
        *replicas,
        f"  {why}",
        f"  {matched}",
        f"  (report of ledger sequence {market.ledger_seq}, generated {market.generated_at or 'at an unknown time'};"
        " speeds in kops, see --help)",
    ])


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"

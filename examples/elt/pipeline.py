"""The functions behind workflow.yaml: plain Python, typed, no ork imports needed except Context."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pydantic import BaseModel

from ork import Context

HERE = Path(__file__).parent
REGIONS = {"europe": {"PT", "GB", "DE"}, "americas": {"US"}}


class Rates(BaseModel):
    base: str
    rates: dict[str, float]


class Report(BaseModel):
    region: str
    total_eur: float
    path: str


def extract_csv(path: str, ctx: Context) -> list[dict[str, str]]:
    with open(HERE / path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    ctx.log.info("read %d rows from %s", len(rows), path)
    ctx.metrics.record("rows_read", len(rows), labels={"file": path})
    return rows


def fetch_rates(ctx: Context) -> Rates:
    if ctx.attempt == 1:
        raise ConnectionError("rate service timed out (the first attempt always does, to show retries)")
    return Rates(base="EUR", rates={"EUR": 1.0, "USD": 0.92, "GBP": 1.17})


def clean_orders(rows: list[dict[str, str]], min_amount: float) -> list[dict[str, object]]:
    return [
        {"customer_id": r["customer_id"], "amount": float(r["amount"]), "currency": r["currency"]}
        for r in rows
        if r["status"] == "paid" and float(r["amount"]) >= min_amount
    ]


def revenue_by_country(
    orders: list[dict[str, object]], customers: list[dict[str, str]], rates: dict[str, float]
) -> dict[str, float]:
    country = {c["customer_id"]: c["country"] for c in customers}
    totals: dict[str, float] = {}
    for o in orders:
        eur = float(o["amount"]) * rates[str(o["currency"])]  # type: ignore[arg-type]
        key = country[str(o["customer_id"])]
        totals[key] = round(totals.get(key, 0.0) + eur, 2)
    return totals


def region_report(revenue: dict[str, float], region: str, out_dir: str, ctx: Context) -> Report:
    rows = {c: v for c, v in revenue.items() if c in REGIONS[region]}
    folder = HERE / out_dir
    folder.mkdir(exist_ok=True)
    path = folder / f"{region}.json"
    path.write_text(json.dumps(rows, indent=2))
    total = round(sum(rows.values()), 2)
    ctx.log.info("%s: %.2f EUR over %d countries -> %s", region, total, len(rows), path)
    return Report(region=region, total_eur=total, path=str(path.relative_to(HERE)))


def notify(upstream: dict[str, object], ctx: Context) -> str:
    message = f"daily_revenue finished with {len(upstream)} report(s): " + ", ".join(sorted(upstream))
    ctx.log.info(message)
    return message

"""srmflow's data converter: one pydantic type-adapter cache per process, stock payloads."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio.contrib.pydantic import (
    PydanticJSONPlainPayloadConverter,
    PydanticPayloadConverter,
    pydantic_data_converter,
)
from temporalio.converter import CompositePayloadConverter, EncodingPayloadConverter

from srmflow.converter import DATA_CONVERTER, SharedPydanticPayloadConverter
from workflows.models import ReprotectPlanInput, ReprotectPlanResult, Step, StepTiming

INPUT = ReprotectPlanInput(site="site-a", plan_id="plan-1", deadline_seconds=600)
RESULT = ReprotectPlanResult(
    site="site-a",
    plan_id="plan-1",
    srm_task_ids=["task-1"],
    steps=[StepTiming(step=Step.PRECHECK, started_at=datetime(2026, 11, 27, tzinfo=UTC))],
)


def _json(converter: CompositePayloadConverter) -> EncodingPayloadConverter:
    return converter.converters[b"json/plain"]


def test_every_run_shares_one_json_converter() -> None:
    # Temporal instantiates payload_converter_class for every workflow run it executes.
    assert DATA_CONVERTER.payload_converter_class is SharedPydanticPayloadConverter
    first, second = SharedPydanticPayloadConverter(), SharedPydanticPayloadConverter()
    assert _json(first) is _json(second)
    assert isinstance(_json(first), PydanticJSONPlainPayloadConverter)
    # What this replaces: the stock class brings a JSON converter (adapter cache) per instance.
    assert _json(PydanticPayloadConverter()) is not _json(PydanticPayloadConverter())


async def test_payloads_match_the_stock_pydantic_converter() -> None:
    ours = await DATA_CONVERTER.encode([INPUT, RESULT, None, "text"])
    stock = await pydantic_data_converter.encode([INPUT, RESULT, None, "text"])
    assert [(p.metadata, p.data) for p in ours] == [(p.metadata, p.data) for p in stock]
    hints: list[type] = [ReprotectPlanInput, ReprotectPlanResult, type(None), str]
    assert await DATA_CONVERTER.decode(stock, hints) == [INPUT, RESULT, None, "text"]
    assert await pydantic_data_converter.decode(ours, hints) == [INPUT, RESULT, None, "text"]

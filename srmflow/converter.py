"""srmflow's data converter: pydantic JSON, with one pydantic type-adapter cache per process.

Temporal builds a payload converter for every workflow run a worker executes. The stock
``pydantic_data_converter`` gives each one its own JSON converter and ``TypeAdapter`` cache, so
every cached run builds and keeps adapters for the same dozen types. Here the runs share one
JSON converter; payloads are byte-for-byte the same as the stock converter's, so histories
written by either read back with the other.
"""

from __future__ import annotations

from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

# Thread-safe: the adapter cache is an lru_cache and adapters hold no per-call state.
_SHARED_JSON = PydanticJSONPlainPayloadConverter()


class SharedPydanticPayloadConverter(CompositePayloadConverter):
    """Temporal's default encodings, with JSON through the process-wide pydantic converter."""

    def __init__(self) -> None:
        super().__init__(
            *(
                _SHARED_JSON if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
"""The data converter of every srmflow client, worker and replayer (without encryption)."""

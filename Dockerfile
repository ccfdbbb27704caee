# srmflow worker / CLI / simulator image: slim, non-root, pinned base.
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md worker.py ./
COPY srmflow ./srmflow
COPY workflows ./workflows
COPY activities ./activities
RUN python -m pip install --no-cache-dir --upgrade pip==24.2 \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[otel]"

FROM python:3.11.10-slim-bookworm
RUN useradd --create-home --uid 10001 srmflow
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER srmflow
WORKDIR /home/srmflow
ENV PYTHONUNBUFFERED=1 SRMFLOW_LOG_FORMAT=json
ENTRYPOINT ["srmflow"]
CMD ["worker"]

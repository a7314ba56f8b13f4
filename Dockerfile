# One image for every Ballast service: `ballast run MODULE:OBJECT` picks the service.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/ballast
COPY pyproject.toml constraints.txt README.md ./
COPY contracts ./contracts
COPY outbox ./outbox
COPY bulkheads ./bulkheads
COPY services ./services
RUN /opt/ballast/bin/pip install -c constraints.txt .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ballast
COPY --from=build /opt/ballast /opt/ballast
ENV PATH=/opt/ballast/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BALLAST_LOG_FORMAT=json \
    BALLAST_DATA_DIR=/home/ballast/data
USER ballast
WORKDIR /home/ballast
EXPOSE 9464
ENTRYPOINT ["ballast"]
CMD ["--help"]

# The one image of every Latency Lab process in docker-compose.yml: the service, the third-party
# simulator, the RQ workers, the dashboard and the seeding job differ only in their command.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The project as `pip install .` sees it; .dockerignore keeps everything else out.
COPY pyproject.toml README.md ./
# latency_lab/ is the import root: links to the program folders beside it (docs/architecture.md).
COPY latency_lab/ latency_lab/
COPY telemetry/ telemetry/
COPY core/ core/
COPY service/ service/
COPY edge/ edge/
COPY simulator/ simulator/
COPY worker/ worker/
COPY seed/ seed/
COPY lab/ lab/
COPY dashboard/ dashboard/
COPY benchmarks/ benchmarks/
COPY cli/ cli/
# The `lab` extra is the lab's server stack; `pip install .` alone is only the pytest plugin.
RUN pip install '.[lab]'

# Never root: the lab writes only to LAB_VAR_DIR (logs, reports) and its home (tool caches).
RUN useradd --create-home --uid 10001 --user-group lab \
    && mkdir -p /var/lib/latency-lab \
    && chown lab:lab /var/lib/latency-lab
USER lab
ENV LAB_VAR_DIR=/var/lib/latency-lab

# service, third-party simulator, dashboard (the edge is nginx, in its own container)
EXPOSE 8001 8002 8501
CMD ["latency-lab", "--help"]

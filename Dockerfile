# The API and worker image (docker-compose.yml builds it for `api` and `worker`).
# Serving needs no torch: only the base dependencies and the packaged student/intent models.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY typeahead ./typeahead
COPY loadtest ./loadtest
RUN pip install --no-cache-dir . && useradd --system --uid 10001 typeahead
USER typeahead
EXPOSE 8080
CMD ["typeahead", "serve", "--index", "/data/index", "--host", "0.0.0.0", "--port", "8080"]

# The ragkit service image (CPU). Build: docker build -t ragkit .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAGKIT_DATA_DIR=/data
WORKDIR /app
COPY requirements.txt pyproject.toml README.md ./
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
COPY ragkit ./ragkit
COPY samples ./samples
COPY app.py ./
COPY app_pages ./app_pages
COPY .streamlit ./.streamlit
# The notebooks, which ragkit/workbench/notebooks/ links to (package data). Installed in place, so
# that paths relative to the checkout (the notebooks' samples/docs) resolve under /app from any
# working directory, a notebook's kernel included.
COPY notebooks ./notebooks
RUN pip install --no-cache-dir --no-deps -e .
VOLUME /data
EXPOSE 8000
HEALTHCHECK CMD python -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:8000/health/live').status_code != 200)"
CMD ["ragkit", "serve", "--host", "0.0.0.0", "--port", "8000"]

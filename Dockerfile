# GPU host image. Install steps are the same .ci/install that CI runs, with faiss swapped for its
# CUDA build; DINOv2-L/14 weights are fetched at build time into the model path.
FROM nvidia/cuda:13.0.1-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    HOLOSCAN_INPUT_PATH=/var/holoscan/input \
    HOLOSCAN_OUTPUT_PATH=/var/holoscan/output \
    HOLOSCAN_MODEL_PATH=/opt/models

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 cs3f \
    && mkdir -p /opt/app /opt/models /var/holoscan/input /var/holoscan/output \
    && chown -R cs3f:cs3f /opt/app /opt/models /var/holoscan

USER 1000:1000
WORKDIR /opt/app

COPY --chown=cs3f:cs3f requirements.txt requirements-test.txt ./
COPY --chown=cs3f:cs3f .ci ./.ci
RUN CS3F_FAISS=faiss-gpu-cu13-cuvs==1.15.0 bash .ci/install \
    && .venv/bin/hf download facebook/dinov2-large --local-dir /opt/models/dinov2-vitl14

COPY --chown=cs3f:cs3f cs3f ./cs3f
COPY --chown=cs3f:cs3f operators ./operators
COPY --chown=cs3f:cs3f app ./app

# python -m app listen (the C-STORE SCP) listens here by default (pacs.listen_port)
EXPOSE 11112
ENTRYPOINT ["/opt/app/.venv/bin/python", "-m", "app"]

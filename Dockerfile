# syntax=docker/dockerfile:1
# tumor-search for GPU workers. TensorFlow brings CUDA and cuDNN as pip wheels
# (tensorflow[and-cuda]), so the host needs only the NVIDIA driver and Container Toolkit.
#   docker build -t tumor-search .
#   docker run --rm --gpus 1 -v /srv/datasets/kaggle:/data:ro tumor-search worker --study kaggle --storage URL --data /data

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone: the multi-GB TensorFlow/CUDA layer is
# rebuilt only when the dependencies change, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['gpu']))" > requirements.txt \
    && pip install -r requirements.txt

COPY README.md ./
COPY search ./search
COPY models ./models
COPY data ./data
COPY common ./common
COPY predictor ./predictor
RUN pip install --no-deps . && tumor-search --help > /dev/null

FROM python:3.11-slim
# The venv moves as is (same path, same Python); no compiler, pip cache or sources follow.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TUMOR_SEARCH_CACHE=/cache/tumor-search \
    KERAS_HOME=/cache/keras
RUN useradd --create-home --uid 10001 tumor \
    && mkdir -p /cache/tumor-search /cache/keras \
    && chown -R tumor:tumor /cache
USER tumor
WORKDIR /home/tumor
# The compose services pass the subcommand: `command: [worker, --study, ...]`.
ENTRYPOINT ["tumor-search"]
CMD ["--help"]

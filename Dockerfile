# The image of kuberay/*.yaml: Ray's GPU image (the Ray version of pyproject.toml's range) with
# this package installed. docker build -t dwsfusion:0.1.0 .
FROM rayproject/ray:2.60.0-py311-gpu
COPY --chown=ray:users . /home/ray/dwsfusion
RUN pip install --no-cache-dir "torch>=2.4,<3" -e /home/ray/dwsfusion
WORKDIR /home/ray/dwsfusion

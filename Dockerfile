# One image for every hasmb component: the operator and the SMB data plane
# (hasmb-operator, hasmb-smbd, kubectl-hasmb, hasmb-probe). No Docker engine runs on
# the development machines; hack/ builds the same content into an OCI image for the
# real-node test tier. This file is what a registry-backed build would use.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/hasmb \
 && /opt/hasmb/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# Runs as root: hasmb-smbd binds 445/135 and serves files owned by any user on the
# shared volume. The pod spec drops every capability it does not need.
COPY --from=build /opt/hasmb /opt/hasmb
ENV PATH=/opt/hasmb/bin:$PATH \
    PYTHONUNBUFFERED=1
EXPOSE 445 135 9300
ENTRYPOINT []
CMD ["hasmb-smbd", "--help"]

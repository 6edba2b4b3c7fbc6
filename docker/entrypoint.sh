#!/usr/bin/env bash
# The image's entrypoint (docker/Dockerfile): `python -m lightning_fm "$@"`, after checking that the folders runs and
# data write into are writable by the image's user. A bind mount whose host folder did not exist is created by
# Docker, owned by root: the run would fail later, deep in a checkpoint or a download; this says why at once.
set -euo pipefail

for dir in /workspace/runs /workspace/data; do
    if [[ -d "$dir" && ! -w "$dir" ]]; then
        echo "error: $dir (owner $(stat -c %u:%g "$dir")) is not writable by uid $(id -u): create the host folders" \
            "before docker run (mkdir -p runs data), owned by the uid the image was built with" \
            "(--build-arg USER_UID=\$(id -u) --build-arg USER_GID=\$(id -g)); or on the host:" \
            "sudo chown \$(id -u):\$(id -g) runs data" >&2
        exit 2
    fi
done
exec python -m lightning_fm "$@"

# The runvoy-sidecar image: the `sidecar` container of every Cloud Run job
# (internal/compute-cloudrun, `job_body`). The job passes only args
# (`--workspace /workspace --runner-binary /usr/local/bin/runvoy-runner --serve-ready
# 0.0.0.0:8081`), so the entrypoint is the sidecar itself. It copies the runner binary into the
# shared /workspace, from where the job's runner container, any Linux image, executes it:
# both binaries are statically linked.
#
# It runs as root: it writes into a volume whose owner the platform decides, and the command's
# image (root in most images) must be able to read what it writes.
FROM scratch
COPY runvoy-sidecar /usr/local/bin/runvoy-sidecar
COPY runvoy-runner /usr/local/bin/runvoy-runner
ENV PATH=/usr/local/bin
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/runvoy-sidecar"]
CMD ["--workspace", "/workspace", "--runner-binary", "/usr/local/bin/runvoy-runner", "--serve-ready", "0.0.0.0:8081"]

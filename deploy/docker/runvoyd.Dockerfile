# The runvoyd image: both Cloud Run services (deploy/terraform/gcp/services.tf runs
# `command = ["runvoyd"]`, `args = ["serve", "--backend", "gcp"]`).
#
# Built by `make images` from a context scripts/images.sh stages: a statically linked runvoyd
# (nothing else to load, hence FROM scratch), the host's CA bundle for TLS to Google's APIs, a
# passwd entry for the unprivileged user and a world-writable /tmp for the data dir.
FROM scratch
COPY rootfs/ /
COPY runvoyd /usr/local/bin/runvoyd
# PATH: Cloud Run resolves the Terraform's bare `runvoyd` through the image's PATH.
# RUNVOY_DATA_DIR: the store is remote on --backend gcp; runvoyd still wants a private writable
# directory (the Terraform sets the same value). SSL_CERT_FILE: the bundle copied above.
ENV PATH=/usr/local/bin \
    HOME=/tmp \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    RUNVOY_DATA_DIR=/tmp/runvoy \
    RUNVOY_LISTEN=0.0.0.0:8080
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/runvoyd"]
CMD ["serve", "--backend", "gcp"]

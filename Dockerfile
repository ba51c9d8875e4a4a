# chatd container image.
#
#   docker build --build-arg VERSION=1.0.0 -t chatd .
#
# The build line below is the one e2e/failover uses for the binary it tests.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so that a change to the code reuses the downloaded modules.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o /out/chatd ./cmd/chatd

# A static binary needs no distribution: the image holds chatd and the CA
# certificates (for a rediss:// REDIS_URL), and runs as an unprivileged user.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/chatd /chatd
USER 65532:65532
ENV CHAT_ADDR=:8080
EXPOSE 8080
# `chatd health` GETs http://127.0.0.1:8080/readyz: exit 0 on 200, 1 otherwise
# (503 while Redis is unreachable or the replica drains). No shell needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["/chatd", "health"]
ENTRYPOINT ["/chatd"]

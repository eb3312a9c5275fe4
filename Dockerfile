# syntax=docker/dockerfile:1
#
# dhi-admission, built on Docker Hardened Images (docker login dhi.io first).
#
#   docker buildx build --build-arg DHI_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" \
#     -t ghcr.io/dhi-admission/dhi-admission:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .   (each platform builds natively)
#
# The binary is static (musl): the runtime base, dhi.io/static, has no C library at all
# (its -glibc variant has glibc but not necessarily libgcc_s, which a glibc Rust binary
# also loads), so a static binary is the one that needs nothing from the image but
# /etc/passwd and CA certificates. musl's own allocator is slow under concurrency; the
# binary uses mimalloc as its global allocator, which makes that moot. TLS is rustls
# with the ring provider: no OpenSSL anywhere, at build or at run time.
#
# Both images are pinned to tags that exist in the DHI catalog (tests/deploy_manifests.rs
# checks this); pin them by digest in CI for reproducible builds.
ARG RUST_IMAGE=dhi.io/rust:1-debian13-dev
ARG RUNTIME_IMAGE=dhi.io/static:20250419-debian13

FROM ${RUST_IMAGE} AS build
# The commit `dhi-admission --version` prints: the build context has no .git
# (.dockerignore), so build.rs takes it from here; "unknown" when not given.
ARG DHI_GIT_COMMIT=unknown
# C compilers for the two crates with C code (ring, mimalloc) when targeting musl.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# Native musl target of the build platform (x86_64 or aarch64).
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    RUSTFLAGS="-C target-feature=+crt-static"
COPY . .
# Layer caching for dependencies through BuildKit cache mounts: the crates.io registry
# (the rust image's CARGO_HOME is /usr/local/cargo) and the target directory persist
# between builds, so a source change recompiles this crate only, not its
# dependencies. A cache-mounted target directory is not part of the image, hence the
# copy out of it in the same step.
RUN --mount=type=cache,id=dhi-admission-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=dhi-admission-target,target=/src/target,sharing=locked \
    target="$(uname -m)-unknown-linux-musl" \
 && DHI_GIT_COMMIT="$DHI_GIT_COMMIT" cargo build --release --locked --target "$target" --bin dhi-admission \
 && install -D -m 0555 "target/$target/release/dhi-admission" /out/dhi-admission

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="dhi-admission" \
      org.opencontainers.image.description="Kubernetes admission webhook for Docker Hardened Images" \
      org.opencontainers.image.source="https://github.com/dhi-admission/dhi-admission" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/dhi-admission /dhi-admission
# The binary is built with mimalloc's `no_thp`, so it never asks for transparent huge
# pages; on nodes whose THP mode is `always` the kernel would still hand out 2 MiB
# pages, and this makes mimalloc opt the process out (idle RSS ~10 MiB instead of ~17).
ENV MIMALLOC_ALLOW_THP=0
# The static image's nonroot account; the Deployment sets the same IDs explicitly.
USER 65532:65532
# 8443: admission (TLS); 9090: /metrics, /healthz, /readyz (plain HTTP).
EXPOSE 8443 9090
ENTRYPOINT ["/dhi-admission"]
CMD ["serve"]

# Multi-stage build of the operator: a static musl binary on a distroless,
# non-root base. (No container engine runs on the project's build machines;
# this file is for users who build images.)
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev make
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked --bin integration-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/dist/integration-operator /integration-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/integration-operator"]
CMD ["run"]

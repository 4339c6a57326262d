# The Docker image (Dockerfile): the project on Debian bookworm, real Caffe 1.0 in a bullseye root.
#   make docker        build it as $(IMAGE): Docker where a Docker engine answers, else podman
#                      or buildah (installed as root on Debian when absent); base images are made
#                      first where no registry answers (scripts/docker_build.sh)
#   make docker-base   just the base images debian:bookworm and debian:bullseye: kept, pulled,
#                      or made with debootstrap and imported (root; Debian packages only)
# Variables: IMAGE (default deepyeast); DOCKER_ENGINE (docker, podman or buildah);
# WHEELHOUSE=DIR (wheels for the build's pip; default the find-links folder of pip's
# configuration); CA_BUNDLE=FILE (CA bundle for the build's pip; default pip's configured
# cert); DOCKER_BUILD_FLAGS (more flags for the build command, e.g. --no-cache).
IMAGE ?= deepyeast
DOCKER_BUILD_FLAGS ?=
# (variables given on the command line or in the environment reach the script as they are)

.PHONY: docker docker-base
docker:
	@IMAGE=$(IMAGE) scripts/docker_build.sh $(DOCKER_BUILD_FLAGS)

docker-base:
	@scripts/docker_base.sh $(or $(DOCKER_ENGINE),$(shell docker info >/dev/null 2>&1 && echo docker || echo podman)) bookworm bullseye

# Real Caffe 1.0 (Debian bullseye, CPU) in a debootstrap root outside the checkout.
#   make caffe           build it once (about 1.5 min, 1 GB; needs root and debootstrap,
#                        installs debootstrap with apt-get when missing), reuse it
#                        afterwards, rebuild it when caffe-packages.txt changes
#   make caffe-optional  the same, but only a warning where this machine cannot build
#                        it (not root, no debootstrap): the real-Caffe tests then skip
#   make caffe-clean     remove it
# bin/caffe and bin/caffe-python run inside it.
# DEEPYEAST_CAFFE_ROOT: set (and exported) by the top-level Makefile

.PHONY: caffe caffe-optional caffe-clean caffe-debootstrap

caffe-debootstrap:
	@if [ ! -x "$(DEEPYEAST_CAFFE_ROOT)/usr/bin/caffe" ] && ! command -v debootstrap >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing debootstrap"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; fi

caffe: caffe-debootstrap
	scripts/build_caffe_root.sh

caffe-optional: caffe-debootstrap
	@scripts/build_caffe_root.sh; rc=$$?; \
	if [ $$rc = 3 ]; then echo "warning: no Caffe root on this machine; tests marked 'caffe' will be skipped"; \
	elif [ $$rc != 0 ]; then exit $$rc; fi

caffe-clean:
	rm -rf "$(DEEPYEAST_CAFFE_ROOT)"

# `make serve` and `make test` set themselves up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_STAMP := /var/lib/dicomweb-debian-deps-5
TEST_DEBIAN_STAMP := /var/lib/dicomweb-debian-test-deps-3
DICOMWEB_DATA_DIR ?= var
DICOMWEB_BIND ?= 127.0.0.1:8080
export DICOMWEB_DATA_DIR
# make serve starts the DIMSE listener too, here unless DICOMWEB_DIMSE_BIND says where
serve: export DICOMWEB_DIMSE_BIND ?= 127.0.0.1:11112

.PHONY: serve viewer test bench bench-compare sweep backfill clean

# Debian packages: a Python with venv support; curl for the README examples; DCMTK, which
# the tests use to check that another toolkit reads what the server writes; nginx and
# openssl, which the tests put in front of the service as deploy/nginx/ says; npm, which
# fetches the viewer (any npm will do: Debian's is installed only when there is none);
# ffmpeg, which the server runs to frame videos and to make videos of multi-frame images;
# DejaVu Sans, the font of reports rendered as PDF.
$(DEBIAN_STAMP):
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! command -v curl >/dev/null || ! command -v dcmdump >/dev/null \
			|| ! command -v nginx >/dev/null || ! command -v openssl >/dev/null || ! command -v ffmpeg >/dev/null \
			|| [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then \
		apt-get update && apt-get install -y python3 python3-venv python3-dev curl dcmtk nginx openssl ffmpeg \
			fonts-dejavu-core; fi
	@command -v npm >/dev/null || { apt-get update && apt-get install -y npm; }
	@touch $@ 2>/dev/null || true

# For the tests only: chromium, the browser the viewer's tests drive (Playwright, its own
# browser downloads unused); djxl and ojph_expand, the JPEG XL and HTJ2K reference decoders
# that check what our encoders write; pdftotext, which reads the PDFs of reports; Orthanc, an
# independent DIMSE peer (its service is not started: the tests run their own).
$(TEST_DEBIAN_STAMP):
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }
	@command -v Orthanc >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y orthanc; }
	@command -v djxl >/dev/null && command -v ojph_expand >/dev/null && command -v pdftotext >/dev/null || \
		{ apt-get update && apt-get install -y libjxl-tools openjph-tools poppler-utils; }
	@touch $@ 2>/dev/null || true

$(STAMP): setup.cfg pyproject.toml | $(DEBIAN_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# The OHIF viewer at /viewer: fetched once with npm, checked against its pinned sha512. Without
# it (no npm, no registry) the server still serves everything else and says so at /viewer.
viewer: $(STAMP)
	@$(BIN)/dicomweb viewer install || echo "(the viewer is not installed; everything else is served)"

serve: $(STAMP) viewer
	@mkdir -p $(DICOMWEB_DATA_DIR)
	@if [ -z "$$DICOMWEB_API_KEY" ] && [ ! -s $(DICOMWEB_DATA_DIR)/api-key ]; then \
		umask 077; $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))' > $(DICOMWEB_DATA_DIR)/api-key; fi
	@if [ -z "$$DICOMWEB_API_KEY" ]; then echo "API key (stored in $(DICOMWEB_DATA_DIR)/api-key): $$(cat $(DICOMWEB_DATA_DIR)/api-key)"; fi
	@echo "DICOMweb service on http://$(DICOMWEB_BIND)/dicom-web (the key may read, store and use the Worklist)"
	@echo "Viewer on http://$(DICOMWEB_BIND)/viewer/ (sign in with a person's key: $(BIN)/dicomweb keys add YOUR-NAME --person)"
	@echo "DIMSE listener DICOMWEB on $(DICOMWEB_DIMSE_BIND) (peers: DICOMWEB_DIMSE_PEERS, e.g. MODALITY1@127.0.0.1:104:store)"
	@env PATH="$(abspath $(BIN)):$$PATH" DICOMWEB_BIND=$(DICOMWEB_BIND) \
		DICOMWEB_API_KEY_PERMISSIONS=$${DICOMWEB_API_KEY_PERMISSIONS:-read,store,worklist} deploy/start.sh

test: $(STAMP) | $(TEST_DEBIAN_STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run --start

# Ours against Orthanc (installed from Debian if missing) and nginx, interleaved: docs/benchmarks.md.
bench-compare: $(STAMP)
	$(BIN)/python -m bench.compare

sweep: $(STAMP)
	$(BIN)/dicomweb sweep

backfill: $(STAMP)
	$(BIN)/dicomweb backfill

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

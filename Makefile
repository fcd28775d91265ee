.PHONY: help run test lint openapi docker bench
help:           ## list the tasks
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'
run:            ## set up and run the service on port 8000 (SQLite, ./var, local Redis)
	./scripts/run.sh
test:           ## run the tests (TEST_DATABASE_URL=postgresql+psycopg://... for PostgreSQL)
	./scripts/test.sh
lint:           ## ruff, mypy and the import contracts (pyproject.toml)
	.venv/bin/ruff check jobs_api workers tests migrations bench && .venv/bin/mypy jobs_api workers bench && .venv/bin/lint-imports
openapi:        ## regenerate openapi.yaml from the code
	.venv/bin/flask --app jobs_api.wsgi openapi write --format yaml openapi.yaml
bench:          ## benchmarks against raw ffmpeg; tables appended to bench/RESULTS.md
	for script in small_file throughput large_file normalization api_load memory many_jobs; do .venv/bin/python bench/$$script.py || exit 1; done
docker:         ## build the image
	docker build -t jobs-api .

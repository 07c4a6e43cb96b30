#!/usr/bin/env bash
# An example batch pipeline: open a batch, do the work (recording usage with the batch's job id),
# close it with the number of leads it produced. costcontrol then computes the batch's cost and
# cost per lead, and the cost-per-lead alert rules watch them.
#
#   bin/run_nightly.sh                 # pipeline "nightly-leads", 42 leads
#   PIPELINE=enrich LEADS=120 bin/run_nightly.sh
#
# In a real pipeline the work step is your code: it passes job=$JOB to costcontrol when it records
# usage (tracking.services.cost_entry_record, the HTTP API or the Python client), and GPU time
# sampled while the batch runs is charged to it too. If the work fails, the batch is still closed
# (with 0 leads), so it shows up as a batch whose cost per lead is undefined.
set -o errexit -o pipefail -o nounset

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PIPELINE=${PIPELINE:-nightly-leads}
LEADS=${LEADS:-42}

JOB=$("$PY" manage.py batch start "$PIPELINE" --quiet)
echo "run_nightly: batch $PIPELINE started, job $JOB"

finish() {
    local leads=$1
    "$PY" manage.py batch finish "$PIPELINE" --leads "$leads"
}
trap 'echo "run_nightly: the work failed; closing the batch with 0 leads" >&2; finish 0; exit 1' ERR

# --- the work (a placeholder): one model call, recorded with the batch's job id ---------------------
"$PY" manage.py record_cost --provider openai --model gpt-4o-mini \
    --input-tokens 1200 --output-tokens 300 --service nightly-pipeline \
    --job "$JOB" --idempotency-key "$JOB-step-1" >/dev/null

trap - ERR
finish "$LEADS"

# Shared by scripts/study-env.sh and scripts/vllm-env.sh (sourced, not run): a side venv built
# from a requirement set, updated in place when that set changes, skipped when it has not.
#
# The caller sets NAME (for messages), VENV, PYTHON, STAMP and the array REQUIREMENTS, then:
#   venv_skip_if_current "$0"        exits 0 when the stamp matches (prints that it is up to date)
#   venv_install "<extras>"          creates the venv if needed, installs REQUIREMENTS and the
#                                    project (editable, with <extras>, or none for ""); exits 1 with pip's log on failure
#   venv_done                        writes the stamp and reports time and size
# The stamp is the hash of the requirement set, pyproject.toml, the calling script, this file and
# the Python version.

venv_skip_if_current() {
  local script="$1"
  VENV_WANT="$(
    {
      printf '%s\n' "${REQUIREMENTS[@]}"
      cat "$ROOT/pyproject.toml" "$script" "${BASH_SOURCE[0]}"
      "$PYTHON" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -d' ' -f1
  )"
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$VENV_WANT" && -x "$VENV/bin/python" ]]; then
    echo "$NAME: $VENV is up to date"
    exit 0
  fi
  VENV_STARTED=$SECONDS
}

venv_install() {
  local extras="$1"
  if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    echo "$NAME: creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  rm -f "$STAMP"
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
  "${PIP[@]}" install --quiet --upgrade pip
  echo "$NAME: installing ${REQUIREMENTS[*]} and the project (editable, [$extras])"
  local log
  log="$(mktemp)"
  # one resolve: the requirements first, so a local torch wheel satisfies exact pins
  local project="$ROOT"
  [[ -n "$extras" ]] && project="$ROOT[$extras]"
  if ! "${PIP[@]}" install --quiet "${REQUIREMENTS[@]}" -e "$project" >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
    rm -f "$log"
    echo "$NAME: pip install failed" >&2
    exit 1
  fi
  grep -v "is ignored: it is neither a file nor a directory" "$log" || true
  rm -f "$log"
}

venv_done() {
  echo "$VENV_WANT" > "$STAMP"
  echo "$NAME: built in $((SECONDS - VENV_STARTED)) s; $(du -sh "$VENV" | cut -f1) in $VENV"
}

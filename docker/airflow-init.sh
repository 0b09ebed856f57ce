#!/usr/bin/env bash
# stpipe-airflow-init: makes an Airflow deployment of stpipe ready, then exits 0. Idempotent:
# run it again after an upgrade or a change of settings. The Compose service airflow-init runs
# it (installed in the image as stpipe-airflow-init); outside Docker: bash docker/airflow-init.sh
#
#   1. (as root with AIRFLOW_UID set: Compose) creates the data folder and the passwords file's
#      folder, hands them to AIRFLOW_UID:0 (group 0 writable), and goes on as that user
#   2. waits for Airflow's metadata database (up to STPIPE_DB_WAIT_SECONDS), then migrates it
#   3. sets the pool cnn to STPIPE_CNN_POOL_SLOTS slots
#   4. writes the admin's password into SimpleAuthManager's passwords file (mode 0600; other
#      users' entries are kept)
#   5. creates or updates the warehouse's PostgreSQL roles (stpipe warehouse roles)
#
# Reads these variables. Any NAME marked (file) may instead be given as NAME_FILE, the path of a
# file holding the value (a Compose secret under /run/secrets/); setting both is an error.
# Required:
#   AIRFLOW_HOME                   Airflow's home (the image sets /opt/airflow)
#   AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, or its _CMD / _SECRET variant: read by Airflow itself
#   STPIPE_CNN_POOL_SLOTS          slots of the pool cnn (VGG-16 tasks at once), an integer >= 1
# Optional:
#   AIRFLOW_ADMIN_USER, AIRFLOW_ADMIN_PASSWORD (file)
#                                  both or neither; without them step 4 is skipped. The API server
#                                  must list the user: [core] simple_auth_manager_users=USER:admin
#   AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE
#                                  where the API server reads passwords; default Airflow's,
#                                  $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
#   PIPELINE_WAREHOUSE_ADMIN_URL (file)
#                                  a superuser's SQLAlchemy URL of the warehouse database; without
#                                  it step 5 is skipped. With it, PIPELINE_WAREHOUSE_WRITER_PASSWORD
#                                  (file) and PIPELINE_WAREHOUSE_ANALYST_PASSWORD (file) are needed
#   PIPELINE_DATA_DIR              a local folder is created (step 1 hands it over); s3://... is left
#   AIRFLOW_UID                    only read as root: the user the deployment runs as (step 1)
#   STPIPE_DB_WAIT_SECONDS         how long step 2 waits for the database (default 120)
# PATH must find the project environment's airflow, stpipe and python3.
set -euo pipefail

fail() {
  echo "stpipe-airflow-init: $*" >&2
  exit 1
}

# NAME_FILE -> NAME, for the variables marked (file) above.
for name in AIRFLOW_ADMIN_PASSWORD PIPELINE_WAREHOUSE_ADMIN_URL \
  PIPELINE_WAREHOUSE_WRITER_PASSWORD PIPELINE_WAREHOUSE_ANALYST_PASSWORD; do
  file_var="${name}_FILE"
  if [[ -n "${!file_var:-}" ]]; then
    [[ -z "${!name:-}" ]] || fail "set ${name} or ${file_var}, not both"
    [[ -r "${!file_var}" ]] || fail "${file_var}=${!file_var} is not a readable file"
    export "${name}=$(<"${!file_var}")"
    unset "${file_var}"
  fi
done

: "${AIRFLOW_HOME:?stpipe-airflow-init: set AIRFLOW_HOME}"
slots="${STPIPE_CNN_POOL_SLOTS:-}"
[[ "${slots}" =~ ^[1-9][0-9]*$ ]] ||
  fail "STPIPE_CNN_POOL_SLOTS=${slots@Q} must be an integer >= 1 (workers x worker concurrency)"
if [[ -n "${AIRFLOW_ADMIN_USER:-}" || -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]]; then
  [[ -n "${AIRFLOW_ADMIN_USER:-}" && -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]] ||
    fail "set both AIRFLOW_ADMIN_USER and AIRFLOW_ADMIN_PASSWORD, or neither"
  # ':' and ',' separate users and roles in simple_auth_manager_users.
  [[ "${AIRFLOW_ADMIN_USER}" =~ ^[A-Za-z0-9_.@-]+$ ]] ||
    fail "AIRFLOW_ADMIN_USER may hold only letters, digits and _ . @ -"
fi
passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-${AIRFLOW_HOME}/simple_auth_manager_passwords.json.generated}"
data_dir="${PIPELINE_DATA_DIR:-}"
[[ "${data_dir}" != *://* ]] || data_dir=""

# 1. Docker creates a missing bind-mounted folder as root, and a volume belongs to whoever the
# image says; the deployment runs as AIRFLOW_UID with group 0 (Airflow's Compose convention).
if [[ "$(id -u)" == 0 && -n "${AIRFLOW_UID:-}" && "${AIRFLOW_UID}" != 0 ]]; then
  [[ "${AIRFLOW_UID}" =~ ^[0-9]+$ ]] || fail "AIRFLOW_UID=${AIRFLOW_UID@Q} is not a number"
  owned=("$(dirname "${passwords_file}")")
  [[ -z "${data_dir}" ]] || owned+=("${data_dir}" "${data_dir}/landing")
  mkdir -p "${owned[@]}"
  # Not recursive: a data folder can be large, and what the pipeline writes is already its own.
  chown "${AIRFLOW_UID}:0" "${owned[@]}"
  chmod g+rwx "${owned[@]}"
  [[ ! -e "${passwords_file}" ]] || chown "${AIRFLOW_UID}:0" "${passwords_file}"
  echo "stpipe-airflow-init: ${owned[*]} belong to ${AIRFLOW_UID}:0; going on as that user"
  exec setpriv --reuid="${AIRFLOW_UID}" --regid=0 --clear-groups -- bash "${BASH_SOURCE[0]}" "$@"
fi
[[ -z "${data_dir}" ]] || mkdir -p "${data_dir}/landing"

# 2. The metadata database.
wait_seconds="${STPIPE_DB_WAIT_SECONDS:-120}"
airflow db check --retry "$((wait_seconds / 5 + 1))" --retry-delay 5 >/dev/null ||
  fail "Airflow's metadata database did not answer within ${wait_seconds} s"
airflow db migrate

# 3. The pool that caps concurrent VGG-16 tasks.
airflow pools set cnn "${slots}" "VGG-16 extraction tasks at once (workers x worker concurrency)"

# 4. The admin's password. Python writes the JSON, so any character of the password is escaped;
# written to a temporary name, then renamed into place.
if [[ -n "${AIRFLOW_ADMIN_USER:-}" ]]; then
  python3 - "${passwords_file}" <<'PY'
import json
import os
import sys

path = sys.argv[1]
passwords = {}
if os.path.exists(path):
    with open(path, encoding="utf-8") as existing:
        passwords = json.loads(existing.read().strip() or "{}")
passwords[os.environ["AIRFLOW_ADMIN_USER"]] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
tmp = f"{path}.tmp-{os.getpid()}"
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as out:
    out.write(json.dumps(passwords) + "\n")
os.replace(tmp, path)
PY
  echo "stpipe-airflow-init: the password of ${AIRFLOW_ADMIN_USER} is in ${passwords_file}"
fi
unset AIRFLOW_ADMIN_PASSWORD

# 5. The warehouse's roles (stpipe_writer, stpipe_analyst), as a superuser.
if [[ -n "${PIPELINE_WAREHOUSE_ADMIN_URL:-}" ]]; then
  stpipe warehouse roles
else
  echo "stpipe-airflow-init: no PIPELINE_WAREHOUSE_ADMIN_URL; warehouse roles left as they are"
fi
echo "stpipe-airflow-init: ready"

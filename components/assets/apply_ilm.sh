#!/bin/sh
# Apply index lifecycle policies and index templates to Elasticsearch; idempotent (PUT replaces what exists).
#
# Environment: ES_URL (https://<cluster>-es-http.<ns>.svc:9200), ES_USER, ES_PASSWORD_FILE (the ECK elastic-user
# Secret mounted as a file), ES_CA (CA file of the cluster's HTTP certificate; unset only in tests against plain
# HTTP), POLICY_DIR (folder of <name>.policy.json and <name>.template.json files). Exit 1 on the first failed request.
# The credentials reach curl as a config document on stdin (-K -): never in the environment or on a command line.
set -eu

: "${ES_URL:?ES_URL is required}"
: "${ES_USER:?ES_USER is required}"
: "${ES_PASSWORD_FILE:?ES_PASSWORD_FILE is required}"
: "${POLICY_DIR:?POLICY_DIR is required}"
[ -r "$ES_PASSWORD_FILE" ] || { echo "cannot read ES_PASSWORD_FILE $ES_PASSWORD_FILE" >&2; exit 1; }

# curl config syntax: user = "name:password", with backslash and double quote escaped.
credentials() {
  printf 'user = "%s:%s"\n' "$(printf '%s' "$ES_USER" | sed 's/[\\"]/\\&/g')" \
    "$(tr -d '\n' <"$ES_PASSWORD_FILE" | sed 's/[\\"]/\\&/g')"
}

put() {
  path="$1"
  file="$2"
  if [ -n "${ES_CA:-}" ]; then
    status=$(credentials | curl -K - --silent --show-error --output /tmp/es-response --write-out '%{http_code}' \
      --cacert "$ES_CA" -X PUT -H 'Content-Type: application/json' --data-binary "@$file" "$ES_URL$path")
  else
    status=$(credentials | curl -K - --silent --show-error --output /tmp/es-response --write-out '%{http_code}' \
      -X PUT -H 'Content-Type: application/json' --data-binary "@$file" "$ES_URL$path")
  fi
  case "$status" in
    2*) echo "applied $path" ;;
    *) echo "FAILED $path: HTTP $status: $(head -c 500 /tmp/es-response)" >&2; exit 1 ;;
  esac
}

# Policies first: templates refer to them.
for policy in "$POLICY_DIR"/*.policy.json; do
  name=$(basename "$policy" .policy.json)
  put "/_ilm/policy/$name" "$policy"
done
for template in "$POLICY_DIR"/*.template.json; do
  name=$(basename "$template" .template.json)
  put "/_index_template/$name" "$template"
done
echo "index lifecycle configuration applied"

#!/bin/sh
# Apply index lifecycle policies and index templates to Elasticsearch; idempotent (PUT replaces what exists).
#
# Environment: ES_URL (https://<cluster>-es-http.<ns>.svc:9200), ES_USER, ES_PASSWORD (from the ECK elastic-user
# Secret), ES_CA (CA file of the cluster's HTTP certificate; unset only in tests against plain HTTP),
# POLICY_DIR (folder of <name>.policy.json and <name>.template.json files). Exit 1 on the first failed request.
set -eu

: "${ES_URL:?ES_URL is required}"
: "${ES_USER:?ES_USER is required}"
: "${ES_PASSWORD:?ES_PASSWORD is required}"
: "${POLICY_DIR:?POLICY_DIR is required}"

put() {
  path="$1"
  file="$2"
  if [ -n "${ES_CA:-}" ]; then
    status=$(curl --silent --show-error --output /tmp/es-response --write-out '%{http_code}' --cacert "$ES_CA" \
      --user "$ES_USER:$ES_PASSWORD" -X PUT -H 'Content-Type: application/json' --data-binary "@$file" "$ES_URL$path")
  else
    status=$(curl --silent --show-error --output /tmp/es-response --write-out '%{http_code}' \
      --user "$ES_USER:$ES_PASSWORD" -X PUT -H 'Content-Type: application/json' --data-binary "@$file" "$ES_URL$path")
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

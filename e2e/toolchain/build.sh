#!/usr/bin/env bash
# Builds the real-engine toolchain (Pulumi CLI, Kubernetes provider plugin, control plane, etcd, KWOK) from Go modules
# into a cache outside the repo: $PRIVATE_LLM_E2E_CACHE (default /root/.cache/private-llm-e2e)/<key>/bin, where <key>
# hashes every wrapper module (go.mod, go.sum, *.go), this script (its build flags) and the Go version; the pins in
# the go.mod files are the only source of versions. Idempotent: only binaries missing from that bin/ are built. Prints the bin dir on the last line.
#
#   e2e/toolchain/build.sh            build what is missing
#   e2e/toolchain/build.sh --print    print the bin dir only (exit 1 if anything is missing)
#
# A cold build takes tens of minutes on 2 cores: run it in the background (nohup) when a shell has a time limit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${PRIVATE_LLM_E2E_CACHE:-/root/.cache/private-llm-e2e}"
modules=(pulumi language-python kubernetes-provider kube etcd kwok)

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0 # static binaries, as upstream releases them

key="$(
	cd "$here"
	{
		go env GOVERSION
		sha256sum build.sh
		for m in "${modules[@]}"; do find "$m" -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) | sort; done |
			xargs sha256sum
	} | sha256sum | cut -c1-16
)"
out="$cache_root/$key"
bin="$out/bin"
logs="$out/logs"
src="$out/src"

# binary name -> wrapper module dir; kube builds four binaries from one module.
declare -A module_of=(
	[pulumi]=pulumi [pulumi-language-python]=language-python [pulumi-language-python-exec]=pulumi
	[pulumi-resource-kubernetes]=kubernetes-provider
	[kube-apiserver]=kube [kube-controller-manager]=kube [kube-scheduler]=kube [kubectl]=kube
	[etcd]=etcd [kwok]=kwok
)
binaries=(pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-kubernetes etcd kwok kube-apiserver
	kube-controller-manager kube-scheduler kubectl)

missing=()
for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
if [[ "${1:-}" == "--print" ]]; then
	((${#missing[@]} == 0)) || { echo "missing in $bin: ${missing[*]} (run $0)" >&2; exit 1; }
	echo "$bin"
	exit 0
fi

mkdir -p "$bin" "$logs" "$src"
exec 9>"$out/.lock"
flock 9 # one build per cache key at a time

# Version of a module in a wrapper's build list (resolved from the go.mod pins).
modver() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }
modtime() { (cd "$here/$1" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$2"); }
moddir() { (cd "$here/$1" && go list -m -f '{{.Dir}}' "$2"); }
# The upstream release a pseudo-version was cut from: the wrapper's go.mod states it as "// release: X".
release_of() { sed -n 's|^// release: *||p' "$here/$1/go.mod" | head -1; }

declare -A version_of=()
declare -A seconds_of=()

fail() { # binary, log
	local b="$1" log="$2" m="${module_of[$1]}"
	{
		echo
		echo "error: building $b failed (module e2e/toolchain/$m, log $log). Last lines:"
		tail -n 25 "$log" | sed 's/^/  | /'
		echo "fix: check that the pins in e2e/toolchain/$m/go.mod are served (cd e2e/toolchain/$m && go mod download" \
			"&& go mod tidy), fix the pin or the wrapper, then rerun $0; binaries already built are kept."
	} >&2
	exit 1
}

# go build one main package into bin/ atomically; args: binary, wrapper dir (or build dir), package, ldflags.
gobuild() {
	local b="$1" dir="$2" pkg="$3" ldflags="$4" log="$logs/$1.log" t0
	t0=$(date +%s)
	echo "building $b ($pkg) ..."
	if ! (cd "$dir" && go build -trimpath -tags osusergo,grpcnotrace -ldflags "-s -w $ldflags" -o "$bin/.$b.tmp" "$pkg") \
		>"$log" 2>&1; then
		rm -f "$bin/.$b.tmp"
		fail "$b" "$log"
	fi
	mv "$bin/.$b.tmp" "$bin/$b"
	seconds_of[$b]=$(($(date +%s) - t0))
	echo "built $b in ${seconds_of[$b]}s"
}

want() { [[ ! -x "$bin/$1" ]]; }

# --- Pulumi CLI (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi); release flags from pulumi's .goreleaser.yml.
pulumi_ver="$(modver pulumi github.com/pulumi/pulumi/pkg/v3)"
version_of[pulumi]="$pulumi_ver"
if want pulumi; then
	gobuild pulumi "$here/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
		"-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$pulumi_ver"
fi
# Python language host: our own (language-python/main.go says why), stamped with the sdk/v3 release it uses.
langhost_ver="$(modver language-python github.com/pulumi/pulumi/sdk/v3)"
version_of[pulumi-language-python]="$langhost_ver (e2e host)"
if want pulumi-language-python; then
	gobuild pulumi-language-python "$here/language-python" . \
		"-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$langhost_ver"
fi
# The Python language host execs this shim with the venv's python; it ships in the sdk/v3 module zip.
version_of[pulumi-language-python-exec]="$(modver pulumi github.com/pulumi/pulumi/sdk/v3)"
if want pulumi-language-python-exec; then
	install -m 0755 "$(moddir pulumi github.com/pulumi/pulumi/sdk/v3)/python/cmd/pulumi-language-python-exec" \
		"$bin/pulumi-language-python-exec"
	seconds_of[pulumi-language-python-exec]=0
fi

# --- pulumi-resource-kubernetes. Its main embeds schema-embed.json (schema.json with the version set) and
# terraform-mapping-embed.json (compacted), both generated upstream at build time from files in the module: generate
# them in a build copy of the wrapper under the cache, never in the repo.
k8sprov_ver="$(release_of kubernetes-provider)"
version_of[pulumi-resource-kubernetes]="$k8sprov_ver ($(modver kubernetes-provider github.com/pulumi/pulumi-kubernetes/provider/v4))"
if want pulumi-resource-kubernetes; then
	b="$src/kubernetes-provider"
	rm -rf "$b" && mkdir -p "$b"
	cp "$here/kubernetes-provider/"{go.mod,go.sum,main.go} "$b/"
	chmod u+w "$b"/*
	d="$(moddir kubernetes-provider github.com/pulumi/pulumi-kubernetes/provider/v4)/cmd/pulumi-resource-kubernetes"
	python3 - "$d" "$b" "$k8sprov_ver" <<'EOF'
import json, sys
src, dst, version = sys.argv[1:]
with open(f"{src}/schema.json") as f:
    schema = json.load(f)
schema["version"] = version
with open(f"{dst}/schema-embed.json", "w") as f:
    json.dump(schema, f, separators=(",", ":"))
with open(f"{src}/terraform-mapping.json") as f:
    mapping = json.load(f)
with open(f"{dst}/terraform-mapping-embed.json", "w") as f:
    json.dump(mapping, f, separators=(",", ":"))
EOF
	gobuild pulumi-resource-kubernetes "$b" . \
		"-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$k8sprov_ver"
fi

# --- etcd (go.etcd.io/etcd/server/v3; its version is a constant in go.etcd.io/etcd/api/v3/version).
version_of[etcd]="$(modver etcd go.etcd.io/etcd/server/v3)"
if want etcd; then
	gobuild etcd "$here/etcd" go.etcd.io/etcd/server/v3 ""
fi

# --- KWOK.
kwok_ver="$(modver kwok sigs.k8s.io/kwok)"
version_of[kwok]="$kwok_ver"
if want kwok; then
	gobuild kwok "$here/kwok" sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_ver#v}"
fi

# --- Control plane from k8s.io/kubernetes. Unstamped, /version reports v0.0.0-master and clients (the Pulumi
# provider, Helm's .Capabilities.KubeVersion) misjudge the server, so stamp what upstream's hack/lib/version.sh does.
kube_ver="$(modver kube k8s.io/kubernetes)"
kube_date="$(modtime kube k8s.io/kubernetes)"
minor="${kube_ver#v1.}" && minor="${minor%%.*}"
kube_ldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	kube_ldflags+=" -X $p.gitVersion=$kube_ver -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	kube_ldflags+=" -X $p.buildDate=$kube_date -X $p.gitCommit=" # the proxy does not say which commit a tag is
done
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
	version_of[$b]="$kube_ver"
	if want "$b"; then gobuild "$b" "$here/kube" "k8s.io/kubernetes/cmd/$b" "$kube_ldflags"; fi
done

# --- Manifest: what each binary is, next to the binaries.
{
	echo "{"
	echo "  \"key\": \"$key\", \"go\": \"$(go env GOVERSION)\","
	echo "  \"binaries\": {"
	n=0
	for b in "${binaries[@]}"; do
		n=$((n + 1))
		sep=","
		((n == ${#binaries[@]})) && sep=""
		echo "    \"$b\": {\"module_dir\": \"e2e/toolchain/${module_of[$b]}\", \"version\": \"${version_of[$b]}\"}$sep"
	done
	echo "  }"
	echo "}"
} >"$bin/manifest.json"

for b in "${!seconds_of[@]}"; do echo "build-time $b ${seconds_of[$b]}s"; done | sort
echo "$bin"

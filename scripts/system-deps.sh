#!/usr/bin/env bash
# System tools the deployment checks need, from Debian's packages:
#   kubectl  (kubernetes-client) renders the kustomize overlays in manifests/
#   promtool (prometheus)        checks and unit-tests the alert rules in deploy/prometheus/
# Idempotent: installs only what is missing, and runs `apt-get update` only then.
# Exits 0 when everything is already there, even without root or apt.
set -euo pipefail

# command -> Debian package that provides it
declare -A PACKAGE_OF=(
    [kubectl]=kubernetes-client
    [promtool]=prometheus
)

missing_packages=()
for command_name in "${!PACKAGE_OF[@]}"; do
    if ! command -v "$command_name" >/dev/null 2>&1; then
        missing_packages+=("${PACKAGE_OF[$command_name]}")
    fi
done

# PostGIS for the `postgis` index driver test, where this machine has a PostgreSQL of its own.
for pg_bin in /usr/lib/postgresql/*/bin; do
    pg_major=$(basename "$(dirname "$pg_bin")")
    if [ -d "$pg_bin" ] && ! dpkg -s "postgresql-${pg_major}-postgis-3" >/dev/null 2>&1; then
        missing_packages+=("postgresql-${pg_major}-postgis-3")
    fi
done

if [ "${#missing_packages[@]}" -eq 0 ]; then
    echo "system-deps: kubectl, promtool (and PostGIS where PostgreSQL is) already installed"
    exit 0
fi

echo "system-deps: installing ${missing_packages[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: apt-get not found; install ${missing_packages[*]} (kubectl, promtool) by hand" >&2
    exit 1
fi

run_as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        run_as_root=(sudo)
    else
        echo "system-deps: need root to install ${missing_packages[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${run_as_root[@]}" apt-get update -qq
# --no-install-recommends: only promtool is wanted from `prometheus`, not its web assets and
# exporters. The package's postinst may try to start the prometheus service; with no init
# system (containers, CI) that fails harmlessly, and the server is never used here.
"${run_as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing_packages[@]}"

for command_name in "${!PACKAGE_OF[@]}"; do
    if ! command -v "$command_name" >/dev/null 2>&1; then
        echo "system-deps: $command_name is still missing after installing ${PACKAGE_OF[$command_name]}" >&2
        exit 1
    fi
done
echo "system-deps: done"

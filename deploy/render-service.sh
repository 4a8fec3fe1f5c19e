#!/usr/bin/env bash
# Renders the Cloud Run template service.yaml into a deployable file.
#
#   deploy/render-service.sh [IN] [OUT]        (defaults: service.yaml .deploy/service.yaml)
#
# Environment:
#   PROJECT_ID     required (falls back to `gcloud config get-value project`)
#   SERVICE        Cloud Run service name             (default mcp-agent)
#   NETWORK        VPC network for Direct VPC egress  (default default)
#   SUBNET         subnet for Direct VPC egress       (default default)
#   AGENT_IMAGE    replaces the line `image: agent`       (unset: left bare, for skaffold)
#   SIDECAR_IMAGE  replaces the line `image: mcp-sidecar` (unset: left bare, for skaffold)
#
# Used by cloudbuild.yaml (with digest-pinned images) and by the skaffold "cloudrun" profile as
# a pre-render hook (without images: skaffold replaces the bare names with what it built).
# Only sed and bash: runs in the cloud-sdk image and on any developer machine.
set -euo pipefail

in=${1:-service.yaml}
out=${2:-.deploy/service.yaml}

PROJECT_ID=${PROJECT_ID:-${CLOUDSDK_CORE_PROJECT:-}}
if [ -z "$PROJECT_ID" ] && command -v gcloud >/dev/null; then
  PROJECT_ID=$(gcloud config get-value project 2>/dev/null || true)
fi
if [ -z "$PROJECT_ID" ]; then
  echo "render-service: set PROJECT_ID (or a gcloud default project)" >&2
  exit 1
fi
SERVICE=${SERVICE:-mcp-agent}
NETWORK=${NETWORK:-default}
SUBNET=${SUBNET:-default}
AGENT_IMAGE=${AGENT_IMAGE:-}
SIDECAR_IMAGE=${SIDECAR_IMAGE:-}

# Values go into sed replacements delimited by '|': refuse characters that would break them.
for v in "$PROJECT_ID" "$SERVICE" "$NETWORK" "$SUBNET" "$AGENT_IMAGE" "$SIDECAR_IMAGE"; do
  case $v in *'|'* | *'&'* | *"\\"* | *$'\n'*)
    echo "render-service: unsupported character in value: $v" >&2
    exit 1 ;;
  esac
done

script=(
  -e "s|\\\$\\{PROJECT_ID\\}|$PROJECT_ID|g"
  -e "s|\\\$\\{SERVICE\\}|$SERVICE|g"
  -e "s|\\\$\\{NETWORK\\}|$NETWORK|g"
  -e "s|\\\$\\{SUBNET\\}|$SUBNET|g"
)
# Whole-line match on the image value, so only `image: agent` / `image: mcp-sidecar` change
# (a `- image: agent` list item form is accepted too).
if [ -n "$AGENT_IMAGE" ]; then
  script+=(-e "s|^([[:space:]]*(- )?image:[[:space:]]*)agent[[:space:]]*\$|\\1$AGENT_IMAGE|")
fi
if [ -n "$SIDECAR_IMAGE" ]; then
  script+=(-e "s|^([[:space:]]*(- )?image:[[:space:]]*)mcp-sidecar[[:space:]]*\$|\\1$SIDECAR_IMAGE|")
fi

mkdir -p "$(dirname "$out")"
sed -E "${script[@]}" "$in" >"$out.tmp"

# Every placeholder must be gone (comments included, to keep the check simple).
# shellcheck disable=SC2016  # a literal ${NAME} is what we look for
if grep -n '\${[A-Z_]*}' "$out.tmp" >&2; then
  echo "render-service: unreplaced placeholders above in $out" >&2
  rm -f "$out.tmp"
  exit 1
fi
for pair in "agent:$AGENT_IMAGE" "mcp-sidecar:$SIDECAR_IMAGE"; do
  name=${pair%%:*} value=${pair#*:}
  if [ -n "$value" ] && grep -nE "^[[:space:]]*(- )?image:[[:space:]]*${name}[[:space:]]*\$" "$out.tmp" >&2; then
    echo "render-service: image $name was not replaced" >&2
    rm -f "$out.tmp"
    exit 1
  fi
  if [ -n "$value" ] && ! grep -qF "image: $value" "$out.tmp"; then
    echo "render-service: no 'image: $name' line found in $in" >&2
    rm -f "$out.tmp"
    exit 1
  fi
done
mv "$out.tmp" "$out"
echo "render-service: wrote $out (project $PROJECT_ID, service $SERVICE)" >&2

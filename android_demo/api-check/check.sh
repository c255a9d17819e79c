#!/usr/bin/env bash
# Type-check the Android shell's ExecuTorch calls against ExecuTorch's own Kotlin API sources.
#
#   android_demo/api-check/check.sh /path/to/executorch-checkout
#
# Compiles ExecuTorchRunner.kt (the only shell file that calls ExecuTorch) and Bundles.kt (plain JVM) with
# the core and with
# extension/android/executorch_android/src/main/java/org/pytorch/executorch/*.kt from the checkout,
# whose Android / fbjni dependencies are replaced by the stand-ins in stubs/. Nothing runs: a wrong
# method name, argument type or return type fails the compile. Needs kotlinc (npm kotlin-compiler).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
et="${1:?usage: check.sh EXECUTORCH_CHECKOUT}/extension/android/executorch_android/src/main/java/org/pytorch/executorch"
kotlinc="${KOTLINC:-$(command -v kotlinc || echo /usr/lib/node_modules/kotlin-compiler/bin/kotlinc)}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$kotlinc" -nowarn "$here"/stubs/*.kt "$et"/*.kt "$et"/annotations/*.kt \
  "$here"/../core/src/main/kotlin/ai/melodyedge/core/*.kt \
  "$here"/../app/src/main/kotlin/ai/melodyedge/demo/ExecuTorchRunner.kt \
  "$here"/../app/src/main/kotlin/ai/melodyedge/demo/Bundles.kt -d "$out"
echo "ExecuTorchRunner.kt and Bundles.kt type-check against $et"

#!/bin/bash
# Checks the shell completions against the binary's own help: both parse,
# both offer every command `cowroot --help` lists, and the bash one
# completes commands and options. Usage: completions/check.sh BINARY
set -euo pipefail
here=$(dirname "$0")
bin=$1
fail() { echo "completions: $*" >&2; exit 1; }

bash -n "$here/cowroot.bash" || fail "cowroot.bash does not parse"
zsh -n "$here/_cowroot" || fail "_cowroot does not parse"

mapfile -t commands < <("$bin" --help | sed -n 's/^  cowroot \([a-z]\+\).*/\1/p' | sort -u)
[ ${#commands[@]} -ge 10 ] || fail "found only ${#commands[@]} commands in --help"
for c in "${commands[@]}"; do
    grep -qw -- "$c" "$here/cowroot.bash" || fail "cowroot.bash lacks the command $c"
    grep -q "'$c:" "$here/_cowroot" || fail "_cowroot lacks the command $c"
done

# complete WORD...: what the bash completion offers for the last word.
complete_words() {
    bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _cowroot; printf "%s\n" "${COMPREPLY[@]}"' \
        _ "$here/cowroot.bash" "$@"
}
# offers LIST WORD: whether LIST (one per line) holds WORD (no pipe into
# grep -q: its early exit would fail the pipeline).
offers() { [[ $'\n'$1$'\n' == *$'\n'$2$'\n'* ]]; }
[ "$(complete_words cowroot vol)" = volumes ] || fail "cowroot vol<TAB> is not volumes"
offers "$(complete_words cowroot -v volumes --p)" --prepare || fail "cowroot -v volumes --p<TAB> lacks --prepare"
# Every option a command's --help shows is offered.
for c in status volumes reset maintenance cleanup boot format root rollback attach commit; do
    offered=$(complete_words cowroot "$c" --)
    for opt in $("$bin" "$c" --help | grep '^  cowroot' | grep -o -- '--[a-z-]*' | sort -u); do
        offers "$offered" "$opt" || fail "cowroot $c --<TAB> lacks $opt"
    done
done
echo "completions: ${#commands[@]} commands, bash and zsh"

# bash completion for cowroot(8)
# shellcheck shell=bash

_cowroot() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
    fi
    local commands="boot format status grow volumes reset maintenance checkpoint rollback attach detach list commit hydrate cleanup grub inspect root onfail network poweroff shutdown"
    local global="-v --verbose --config --help --version"
    case $prev in
    --config) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
    --to) mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return ;;
    --pool) mapfile -t COMPREPLY < <(compgen -f -- "${cur:-/dev/}"); return ;;
    --name | detach)
        # The root devices cowroot made: dm uuid COWROOT-thin-NAME.
        local uuid names=""
        for uuid in /sys/block/dm-*/dm/uuid; do
            [ -r "$uuid" ] || continue
            read -r uuid < "$uuid"
            [[ $uuid == COWROOT-thin-* ]] && names+=" ${uuid#COWROOT-thin-}"
        done
        mapfile -t COMPREPLY < <(compgen -W "$names" -- "$cur")
        return
        ;;
    --block-size) mapfile -t COMPREPLY < <(compgen -W "64K 128K 256K 512K 1M 2M" -- "$cur"); return ;;
    --cmdline) return ;;
    esac
    local i command=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
        --config | --name | --block-size | --cmdline | --pool | --from | --to) ((i++)) ;;
        -*) ;;
        *) command=${words[i]}; break ;;
        esac
    done
    local options=""
    case $command in
    "") mapfile -t COMPREPLY < <(compgen -W "$commands $global" -- "$cur"); return ;;
    boot) options="--cmdline --dry-run --print-root --no-wait --last-try --read-only-origin" ;;
    format)
        options="--block-size --force"
        [[ $cur == -* ]] || { mapfile -t COMPREPLY < <(compgen -f -- "${cur:-/dev/}"); return; }
        ;;
    status) options="--json --check --log --name" ;;
    volumes) options="--json --prepare --mount --delete --name" ;;
    reset | maintenance) options="--cancel --name" ;;
    cleanup) options="--name" ;;
    checkpoint)
        if ((cword == i + 1)); then
            mapfile -t COMPREPLY < <(compgen -W "create list delete" -- "$cur")
            return
        fi
        options="--json --name"
        ;;
    rollback) options="--discard --name" ;;
    commit) options="--from --to --force --name" ;;
    attach)
        options="--pool --name --reset"
        [[ $cur == -* ]] || { mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return; }
        ;;
    root) options="--unit --root-arg-unit --root-arg-hook" ;;
    shutdown) options="poweroff reboot halt kexec" ;;
    grow)
        [[ $cur == -* ]] || { mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return; }
        ;;
    inspect)
        [[ $cur == -* ]] || { mapfile -t COMPREPLY < <(compgen -f -- "${cur:-/dev/}"); return; }
        ;;
    esac
    mapfile -t COMPREPLY < <(compgen -W "$options -v --verbose --config --help" -- "$cur")
}
complete -F _cowroot cowroot

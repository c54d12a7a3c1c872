#!/bin/sh
# Prints where the running render's template came from, for its answers file, as three lines:
# source=<git URL or absolute path>, revision=<commit>, note=<empty, or why a field is empty>.
# cargo-generate (0.23.14 to 0.26) hands its hooks neither: its builtins are authors, username,
# project-name, crate_name, crate_type, os-arch, is_init and within_cargo_project, and it deletes
# the template's .git before any hook runs. What is left is cargo-generate's own command line: this
# runs under `sh -c` started by cargo-generate (validate.rhai's system::command), so an ancestor
# process is cargo-generate, and its arguments say --git/--path/<template> and
# --branch/--tag/--revision. Then git says the commit: `rev-parse HEAD` in a path, `ls-remote` for a
# URL (the ref the clone took a moment ago). Linux reads /proc; elsewhere `ps` (arguments with
# spaces cannot be told apart there). Never fails: an unknown field is empty and the note says why.
set -u
note=""

# argv0 PID: the program a process runs; parent PID: its parent.
argv0() {
    if [ -r "/proc/$1/cmdline" ]; then tr '\0' '\n' <"/proc/$1/cmdline" | head -1
    else ps -o args= -p "$1" 2>/dev/null | cut -d' ' -f1; fi
}
parent() { ps -o ppid= -p "$1" 2>/dev/null | tr -d ' '; }
# cargo-generate runs `sh -c "sh .../template-origin.sh"`: the shell between may or may not be there.
pid=$PPID
for _ in 1 2 3 4; do
    case $(basename "$(argv0 "$pid")" 2>/dev/null) in
        cargo-generate* | cargo | cargo.exe) break ;;
    esac
    next=$(parent "$pid")
    [ -n "$next" ] && [ "$next" != 0 ] || break
    pid=$next
done

if [ -r "/proc/$pid/cmdline" ]; then
    args=$(tr '\0' '\n' <"/proc/$pid/cmdline")
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null || pwd)
else
    args=$(ps -o args= -p "$pid" 2>/dev/null | tr ' ' '\n')
    cwd=$(lsof -a -p "$pid" -d cwd -Fn 2>/dev/null | sed -n 's/^n//p' | head -1)
fi

kind="" given="" ref_kind="" ref="" positional="" skip_next="" want=""
first=1 subcommand=""
while IFS= read -r arg; do
    if [ -n "$first" ]; then first=""; continue; fi   # the program itself
    if [ -n "$want" ]; then
        case $want in
            git | path) kind=$want; given=$arg ;;
            branch | tag | revision) ref_kind=$want; ref=$arg ;;
        esac
        want=""; continue
    fi
    if [ -n "$skip_next" ]; then skip_next=""; continue; fi
    case $arg in
        --git=*) kind=git; given=${arg#--git=} ;;
        --path=*) kind=path; given=${arg#--path=} ;;
        --branch=*) ref_kind=branch; ref=${arg#--branch=} ;;
        --tag=*) ref_kind=tag; ref=${arg#--tag=} ;;
        --revision=* | --rev=*) ref_kind=revision; ref=${arg#*=} ;;
        -g | --git) want=git ;;
        -p | --path) want=path ;;
        -b | --branch) want=branch ;;
        -t | --tag) want=tag ;;
        -r | --revision | --rev) want=revision ;;
        --favorite) skip_next=1; note="rendered from a favorite (--favorite): its source is not known here" ;;
        -n | --name | -d | --define | --destination | --values-file | --template-values-file | \
            -i | --identity | --gitconfig | --config | --other-args) skip_next=1 ;;
        -*) ;;
        generate | gen) if [ -z "$subcommand" ]; then subcommand=$arg; elif [ -z "$positional" ]; then positional=$arg; fi ;;
        *) [ -z "$positional" ] && positional=$arg ;;
    esac
done <<ARGS
$args
ARGS

# A positional template: a path when one exists, a URL when it looks like one; else a favorite.
if [ -z "$kind" ] && [ -n "$positional" ]; then
    case $positional in
        /*) [ -d "$positional" ] && { kind=path; given=$positional; } ;;
        *) [ -n "$cwd" ] && [ -d "$cwd/$positional" ] && { kind=path; given=$positional; } ;;
    esac
    if [ -z "$kind" ]; then
        case $positional in
            http://* | https://* | ssh://* | git://* | git@*) kind=git; given=$positional ;;
            gh:*) kind=git; given="https://github.com/${positional#gh:}.git" ;;
            gl:*) kind=git; given="https://gitlab.com/${positional#gl:}.git" ;;
            bb:*) kind=git; given="https://bitbucket.org/${positional#bb:}.git" ;;
            *) note="rendered from the favorite \"$positional\": its source is not known here" ;;
        esac
    fi
fi

source="" revision=""
if [ -n "$given" ]; then
    # A local path (given to --path, or to --git) is recorded absolute, as the update needs it.
    local_dir=""
    case $given in
        /*) [ -d "$given" ] && local_dir=$given ;;
        *) [ -n "$cwd" ] && [ -d "$cwd/$given" ] && local_dir=$cwd/$given ;;
    esac
    if [ -n "$local_dir" ]; then
        source=$(cd "$local_dir" && pwd -P)
    else
        source=$given
    fi
    if [ "$kind" = path ]; then
        # --path copies the checkout's files as they are: its HEAD, unless they differ from it.
        revision=$(git -C "$source" rev-parse --verify -q 'HEAD^{commit}' 2>/dev/null || true)
        if [ -z "$revision" ]; then
            note="$source is not a git checkout: no commit to record"
        elif [ -n "$(git -C "$source" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
            note="$source has uncommitted changes: recorded its HEAD, $revision, which does not hold them"
        fi
    elif [ -n "$local_dir" ]; then
        # --git with a local repository: the commit its ref names (HEAD when none), in full.
        revision=$(git -C "$source" rev-parse --verify -q "${ref:-HEAD}^{commit}" 2>/dev/null || true)
        [ -n "$revision" ] || note="$source has no commit ${ref:-HEAD}"
    else
        case $ref_kind in
            branch) revision=$(git ls-remote "$source" "refs/heads/$ref" 2>/dev/null | cut -f1 | head -1) ;;
            tag) revision=$(git ls-remote "$source" "refs/tags/$ref^{}" "refs/tags/$ref" 2>/dev/null | sort -k2 -r | cut -f1 | head -1) ;;
            revision) revision=$ref ;;   # as given: scripts/update-template resolves it in its clone
            *) revision=$(git ls-remote "$source" HEAD 2>/dev/null | cut -f1 | head -1) ;;
        esac
        [ -n "$revision" ] || note="git ls-remote $source found no commit for ${ref:-HEAD}"
    fi
elif [ -z "$note" ]; then
    note="cargo-generate's command line (process $pid) names no template"
fi
printf 'source=%s\nrevision=%s\nnote=%s\n' "$source" "$revision" "$note"

# shellcheck shell=bash
# The stand-in nixos-rebuild / darwin-rebuild / home-manager: thin shims over real Nix.
# Sourced by the three wrappers next to it, which call: nix_shim_main <flavour> "$@".
#
# They do what the real tools do, on a simulated host whose links live in one directory:
#   build     nix build of the host's output of the flake, ./result in the working directory
#   switch    build, `nix-env -p PROFILE --set` (a real new generation), then the system's own
#             activation (bin/switch-to-configuration, activate), which points current-system
#   boot      build and set the profile only; the demo's "reboot" makes it current and booted
#   --rollback                  with switch/boot: `nix-env -p PROFILE --rollback` first
#   --switch-generation N, -G N darwin-rebuild only, with switch: `nix-env -p PROFILE
#                               --switch-generation N` first (nixos-rebuild and home-manager
#                               have no such flag: the agent moves their profile itself)
#   list-generations, --list-generations, generations   `nix-env --list-generations`
# Environment:
#   NIXFLEET_DEMO_SYSTEM_DIR  the host's profiles/, current-system and booted-system (what
#                             /nix/var/nix/profiles and /run are on a real host)
#   NIXFLEET_DEMO_PACE        seconds to wait after each output line (demo pacing; default 0)

_shim_nix() {
    # No substituter: everything here is built locally, and offline lookups only cost time.
    # No evaluation cache either: several hosts building at once only contend for it.
    nix --extra-experimental-features 'nix-command flakes' --option substituters '' \
        --option eval-cache false "$@"
}

_shim_usage() {
    echo "$_SHIM_PROG: $1" >&2
    echo "usage: $_SHIM_PROG {build|switch|boot|list-generations} --flake <repo-dir>#<host> [--rollback | --switch-generation N]" >&2
    exit 2
}

_shim_pace() {
    local line
    while IFS= read -r line; do
        printf '%s\n' "$line"
        [[ "$_SHIM_PACE" == 0 ]] || sleep "$_SHIM_PACE"
    done
}

_shim_attr() {
    case "$_SHIM_FLAVOUR" in
    nixos) echo "nixosConfigurations.\"$1\".config.system.build.toplevel" ;;
    darwin) echo "darwinConfigurations.\"$1\".system" ;;
    home-manager) echo "homeConfigurations.\"$1\".activationPackage" ;;
    esac
}

# Build into the out-link $1; nix's progress goes to stderr, paced like the rest.
_shim_build() {
    local link=$1
    if [[ "$_SHIM_FLAVOUR" == home-manager ]]; then
        echo "Starting home-manager build for $_SHIM_HOST" | _shim_pace
    else
        echo "building the system configuration..." | _shim_pace >&2
    fi
    { _shim_nix build --out-link "$link" "$_SHIM_REPO#$(_shim_attr "$_SHIM_HOST")" 2>&1 1>&3 3>&- |
        _shim_pace >&2; } 3>&1
    return "${PIPESTATUS[0]}"
}

_shim_activate() {
    local system=$1 code=0
    case "$_SHIM_FLAVOUR" in
    nixos) "$system/bin/switch-to-configuration" "$_SHIM_ACTION" 2>&1 | _shim_pace || code=${PIPESTATUS[0]} ;;
    darwin) { "$system/activate-user" && "$system/activate"; } 2>&1 | _shim_pace || code=${PIPESTATUS[0]} ;;
    home-manager) "$system/activate" 2>&1 | _shim_pace || code=${PIPESTATUS[0]} ;;
    esac
    return "$code"
}

_shim_need_dir() {
    [[ -n "$_SHIM_DIR" ]] || { echo "$_SHIM_PROG: set NIXFLEET_DEMO_SYSTEM_DIR to the simulated host's directory" >&2; exit 2; }
    mkdir -p "$_SHIM_DIR/profiles"
}

nix_shim_main() {
    _SHIM_FLAVOUR=$1
    shift
    case "$_SHIM_FLAVOUR" in
    nixos) _SHIM_PROG=nixos-rebuild ;;
    darwin) _SHIM_PROG=darwin-rebuild ;;
    home-manager) _SHIM_PROG=home-manager ;;
    *) echo "_nix-shim.sh: unknown flavour '$_SHIM_FLAVOUR'" >&2; exit 2 ;;
    esac
    command -v nix >/dev/null || {
        echo "$_SHIM_PROG: the NixFleet demo needs Nix: apt-get install nix-bin (Debian) or see https://nixos.org/download" >&2
        exit 127
    }
    local action="" flake="" rollback=0 generation=""
    while (($# > 0)); do
        case "$1" in
        --flake) (($# >= 2)) || _shim_usage "option '--flake' requires an argument"; flake=$2; shift ;;
        --flake=*) flake=${1#--flake=} ;;
        --rollback) rollback=1 ;;
        --switch-generation | -G)
            [[ "$_SHIM_FLAVOUR" == darwin ]] || _shim_usage "unrecognised flag '$1'"
            (($# >= 2)) || _shim_usage "option '$1' requires an argument"
            [[ "$2" =~ ^[0-9]+$ ]] || _shim_usage "'$2' is not a generation number"
            generation=$2; shift ;;
        --list-generations) action=list-generations ;;
        --version) echo "$_SHIM_PROG (NixFleet stand-in over $(nix --version))"; exit 0 ;;
        -h | --help) _shim_usage "help" ;;
        -L | --print-build-logs | --show-trace | --impure | --refresh | -v | --verbose | \
            --keep-going | -k | --fallback | --use-remote-sudo | --sudo | --fast | --no-write-lock-file) ;;
        -*) _shim_usage "unrecognised flag '$1'" ;;
        *) [[ -z "$action" ]] || _shim_usage "unexpected argument '$1'"; action=$1 ;;
        esac
        shift
    done
    [[ "$action" == generations ]] && action=list-generations
    _SHIM_ACTION=$action
    _SHIM_DIR=${NIXFLEET_DEMO_SYSTEM_DIR:-}
    _SHIM_PACE=${NIXFLEET_DEMO_PACE:-0}
    [[ "$_SHIM_PACE" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || _SHIM_PACE=0
    local profile="$_SHIM_DIR/profiles/system"
    [[ "$_SHIM_FLAVOUR" == home-manager ]] && profile="$_SHIM_DIR/profiles/home-manager"

    case "$action" in
    list-generations) _shim_need_dir; exec nix-env -p "$profile" --list-generations ;;
    build | switch | boot | test) ;;
    "") _shim_usage "no subcommand given" ;;
    *) _shim_usage "unknown subcommand '$action'" ;;
    esac
    if [[ -n "$generation" ]]; then
        ((!rollback)) || _shim_usage "--rollback and --switch-generation exclude each other"
        [[ "$action" == switch ]] || _shim_usage "--switch-generation goes with switch"
        _shim_need_dir
        nix-env -p "$profile" --switch-generation "$generation" 2>&1 | _shim_pace || exit "${PIPESTATUS[0]}"
        _shim_activate "$(readlink -f "$profile")"
        exit $?
    fi
    if ((rollback)); then
        [[ "$action" == switch || "$action" == boot ]] || _shim_usage "--rollback goes with switch or boot"
        _shim_need_dir
        nix-env -p "$profile" --rollback 2>&1 | _shim_pace || exit "${PIPESTATUS[0]}"
        [[ "$action" == boot ]] && exit 0
        _shim_activate "$(readlink -f "$profile")"
        exit $?
    fi

    [[ -n "$flake" ]] || _shim_usage "missing --flake <repo-dir>#<host>"
    [[ "$flake" == *"#"* ]] || _shim_usage "malformed flake reference '$flake' (expected <repo-dir>#<host>)"
    _SHIM_REPO=${flake%%#*}
    _SHIM_HOST=${flake#*#}
    [[ -n "$_SHIM_REPO" ]] || _shim_usage "malformed flake reference '$flake': empty repository path"
    [[ "$_SHIM_HOST" =~ ^[A-Za-z0-9_][A-Za-z0-9_.@+-]*$ ]] ||
        _shim_usage "malformed flake reference '$flake': bad host attribute '$_SHIM_HOST'"

    if [[ "$action" == build ]]; then
        _shim_build result || exit $?
        readlink -f result
        exit 0
    fi
    _shim_need_dir
    local system
    _SHIM_TMP=$(mktemp -d "${TMPDIR:-/tmp}/nix-shim.XXXXXX")
    trap 'rm -rf "$_SHIM_TMP"' EXIT
    _shim_build "$_SHIM_TMP/result" || exit $?
    system=$(readlink -f "$_SHIM_TMP/result")
    if [[ "$action" != test ]]; then
        nix-env -p "$profile" --set "$system" || exit $?
    fi
    [[ "$action" == boot ]] && exit 0
    _shim_activate "$system"
}

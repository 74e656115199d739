# shellcheck shell=bash
# Shared implementation of the fake nixos-rebuild / darwin-rebuild / home-manager
# commands. Sourced (not executed) by the three thin wrappers next to it, which
# call: fake_nix_main <flavour> "$@"   with flavour nixos | darwin | home-manager.
#
# Environment honoured:
#   NIXFLEET_FAKE_DURATION   total seconds the output is spread over (float, default 3, 0 = no pauses)
#   NIXFLEET_FAKE_FAIL       "1" makes the build fail
#   NIXFLEET_FAKE_EXIT       exit code used on a build failure (default 1)
#   NIXFLEET_FAKE_STATE_DIR  where generation / current-system / booted-system live (unset = no state)
# A file <repo-dir>/hosts/<host>/FAIL_BUILD also makes the build fail.

# Nix store hashes use this alphabet (base32 without e, o, u, t).
_FAKE_NIX_B32=0123456789abcdfghijklmnpqrsvwxyz

_FAKE_NIX_SLEEP_PID=""
_FAKE_NIX_PLAN_STREAM=()
_FAKE_NIX_PLAN_TEXT=()

# The sleep runs in the background and is awaited with the `wait` builtin: bash
# only runs traps between foreground commands, so a foreground sleep would delay
# the SIGTERM handler until it finished. This way the handler runs immediately
# and can kill the sleep itself, leaving no orphan behind.
_fake_nix_kill_child() {
    if [[ -n "$_FAKE_NIX_SLEEP_PID" ]]; then
        kill "$_FAKE_NIX_SLEEP_PID" 2>/dev/null || true
        wait "$_FAKE_NIX_SLEEP_PID" 2>/dev/null || true
        _FAKE_NIX_SLEEP_PID=""
    fi
}

_fake_nix_on_signal() {
    trap - TERM INT
    _fake_nix_kill_child
    echo "error: interrupted by the user" >&2
    exit 130
}

_fake_nix_usage_error() {
    echo "$_FAKE_NIX_PROG: $1" >&2
    echo "usage: $_FAKE_NIX_PROG {switch|build} --flake <repo-dir>#<host>" >&2
    exit 2
}

# Deterministic store hash (pure bash, no subprocess): the same host, config
# revision and name always give the same path, like a real store would.
# Result in _FAKE_NIX_HASH to avoid a command-substitution fork per path.
_fake_nix_hash() {
    local seed="$_FAKE_NIX_FLAVOUR|$_FAKE_NIX_HOST|$_FAKE_NIX_REV|$1"
    local -i h=1469598103934665 i c
    local ch out=""
    for ((i = 0; i < ${#seed}; i++)); do
        ch=${seed:i:1}
        printf -v c '%d' "'$ch"
        h=$(((h ^ c) * 1099511628211))
    done
    for ((i = 0; i < 32; i++)); do
        h=$((h * 6364136223846793005 + 1442695040888963407))
        out+=${_FAKE_NIX_B32:$(((h >> 33) & 31)):1}
    done
    _FAKE_NIX_HASH=$out
}

_fake_nix_path() {
    _fake_nix_hash "$1"
    _FAKE_NIX_PATH="/nix/store/$_FAKE_NIX_HASH-$1"
}

# Output is first planned, then played back, so the per-line pause can be
# derived from the total duration and the number of lines.
_out() {
    _FAKE_NIX_PLAN_STREAM+=(1)
    _FAKE_NIX_PLAN_TEXT+=("$1")
}
_err() {
    _FAKE_NIX_PLAN_STREAM+=(2)
    _FAKE_NIX_PLAN_TEXT+=("$1")
}

_fake_nix_play() {
    local count=${#_FAKE_NIX_PLAN_TEXT[@]} delay i
    delay=$(awk -v d="$_FAKE_NIX_DURATION" -v n="$count" \
        'BEGIN { if (n < 1 || d <= 0) print 0; else printf "%.4f\n", d / n }')
    for ((i = 0; i < count; i++)); do
        if [[ "${_FAKE_NIX_PLAN_STREAM[i]}" == 1 ]]; then
            printf '%s\n' "${_FAKE_NIX_PLAN_TEXT[i]}"
        else
            printf '%s\n' "${_FAKE_NIX_PLAN_TEXT[i]}" >&2
        fi
        if [[ "$delay" != 0 ]]; then
            sleep "$delay" &
            _FAKE_NIX_SLEEP_PID=$!
            wait "$_FAKE_NIX_SLEEP_PID" || true
            _FAKE_NIX_SLEEP_PID=""
        fi
    done
    _FAKE_NIX_PLAN_STREAM=()
    _FAKE_NIX_PLAN_TEXT=()
}

_fake_nix_system_name() {
    local version="25.05.20250101.$_FAKE_NIX_REV"
    case "$_FAKE_NIX_FLAVOUR" in
    nixos) _FAKE_NIX_SYSTEM_NAME="nixos-system-$_FAKE_NIX_HOST-$version" ;;
    darwin) _FAKE_NIX_SYSTEM_NAME="darwin-system-$_FAKE_NIX_HOST-$version" ;;
    home-manager) _FAKE_NIX_SYSTEM_NAME="home-manager-generation-$_FAKE_NIX_HOST-$version" ;;
    esac
}

_fake_nix_plan_build() {
    local drvs=() copies=() name
    case "$_FAKE_NIX_FLAVOUR" in
    nixos)
        drvs=(etc-os-release unit-sshd.service unit-nix-daemon.service system-units
            user-units etc-fstab "etc" system-path "firmware" "dbus-1" initrd-linux-6.6.68
            "$_FAKE_NIX_SYSTEM_NAME")
        copies=(openssh-9.9p2 systemd-256.10 linux-6.6.68 htop-3.3.0 git-2.47.1)
        ;;
    darwin)
        drvs=(darwin-option-list launchd-org.nixos.nix-daemon.plist "etc" system-applications
            darwin-manpages system-path darwin-version.json "$_FAKE_NIX_SYSTEM_NAME")
        copies=(git-2.47.1 htop-3.3.0 coreutils-9.5 darwin-uninstaller)
        ;;
    home-manager)
        drvs=(hm_fontconfigconf.d10hmfonts.conf hm-session-vars.sh home-manager-files
            home-manager-path activation-script "$_FAKE_NIX_SYSTEM_NAME")
        copies=(ripgrep-14.1.1 fd-10.2.0 bat-0.24.0)
        ;;
    esac

    if [[ "$_FAKE_NIX_FLAVOUR" == home-manager ]]; then
        _out "Starting home-manager build for $_FAKE_NIX_HOST"
    else
        _out "building the system configuration..."
    fi
    _err "these ${#drvs[@]} derivations will be built:"
    for name in "${drvs[@]}"; do
        _fake_nix_path "$name.drv"
        _err "  $_FAKE_NIX_PATH"
    done
    _err "these ${#copies[@]} paths will be fetched (18.42 MiB download, 74.10 MiB unpacked):"
    for name in "${copies[@]}"; do
        _fake_nix_path "$name"
        _err "  $_FAKE_NIX_PATH"
    done
    for name in "${copies[@]}"; do
        _fake_nix_path "$name"
        _err "copying path '$_FAKE_NIX_PATH' from 'https://cache.nixos.org'..."
    done
}

_fake_nix_plan_derivations() {
    local name
    for name in "$@"; do
        _fake_nix_path "$name.drv"
        _err "building '$_FAKE_NIX_PATH'..."
    done
}

_fake_nix_plan_failure() {
    local drv reason="the build was made to fail on purpose (NIXFLEET_FAKE_FAIL=1)"
    _fake_nix_path "$_FAKE_NIX_HOST-system.drv"
    drv=$_FAKE_NIX_PATH
    if [[ -f "$_FAKE_NIX_REPO/hosts/$_FAKE_NIX_HOST/FAIL_BUILD" ]]; then
        IFS= read -r reason <"$_FAKE_NIX_REPO/hosts/$_FAKE_NIX_HOST/FAIL_BUILD" || true
        [[ -n "$reason" ]] || reason="hosts/$_FAKE_NIX_HOST/FAIL_BUILD exists"
    fi
    _fake_nix_plan_derivations etc system-path
    _err "building '$drv'..."
    _err "error: builder for '$drv' failed with exit code 1;"
    _err "       last 10 log lines:"
    _err "       > unpacking sources"
    _err "       > patching sources"
    _err "       > configuring"
    _err "       > building"
    _err "       > checking configuration of $_FAKE_NIX_HOST"
    _err "       > error: assertion failed: $reason"
    _err "       > while evaluating hosts/$_FAKE_NIX_HOST/configuration.nix"
    _err "       For full logs, run 'nix log $drv'."
    _fake_nix_path "$_FAKE_NIX_SYSTEM_NAME.drv"
    _err "error: 1 dependencies of derivation '$_FAKE_NIX_PATH' failed to build"
}

_fake_nix_plan_activation() {
    local generation=$1
    case "$_FAKE_NIX_FLAVOUR" in
    nixos)
        _out "activating the configuration..."
        _out "setting up /etc..."
        _out "reloading user units for root..."
        _out "restarting sysinit-reactivation.target"
        _out "the following new units were started: sysinit-reactivation.target, systemd-tmpfiles-resetup.service"
        ;;
    darwin)
        _out "setting up user launchd services..."
        _out "Homebrew bundle..."
        _out "setting up groups..."
        _out "setting up users..."
        _out "setting up /Applications/Nix Apps..."
        _out "applying patches..."
        _out "setting up /etc..."
        _out "setting up launchd services..."
        _out "reloading nix-daemon..."
        _out "configuring networking..."
        _out "setting up /Library/Fonts/Nix Fonts..."
        ;;
    home-manager)
        _out "Starting Home Manager activation"
        _out "Activating home-manager configuration for $_FAKE_NIX_HOST"
        _out "Activating checkFilesChanged"
        _out "Activating checkLinkTargets"
        _out "Activating writeBoundary"
        _out "Activating installPackages"
        _out "replacing old 'home-manager-path'"
        _out "installing 'home-manager-path'"
        _out "Activating linkGeneration"
        _out "Cleaning up orphan links from ${HOME:-/home/demo}"
        _out "Creating profile generation $generation"
        _out "Creating home file links in ${HOME:-/home/demo}"
        _out "Activating onFilesChange"
        _out "Activating reloadSystemd"
        ;;
    esac
}

# tmp + rename in the same directory so a reader never sees a half-written file.
_fake_nix_write_atomic() {
    local target=$1 content=$2 tmp
    tmp="$(dirname "$target")/.$(basename "$target").tmp.$$"
    printf '%s\n' "$content" >"$tmp"
    mv -f "$tmp" "$target"
}

_fake_nix_read_generation() {
    local file="$_FAKE_NIX_STATE_DIR/generation" value=""
    if [[ -f "$file" ]]; then
        IFS= read -r value <"$file" || true
    fi
    if [[ "$value" =~ ^[0-9]+$ ]]; then
        _FAKE_NIX_GENERATION=$((10#$value))
    else
        _FAKE_NIX_GENERATION=0
    fi
}

_fake_nix_commit_state() {
    local current=$1 generation=$2
    _fake_nix_write_atomic "$_FAKE_NIX_STATE_DIR/generation" "$generation"
    _fake_nix_write_atomic "$_FAKE_NIX_STATE_DIR/current-system" "$current"
    # booted-system is only set once: a later switch then differs from it,
    # which is how the fleet manager detects "reboot needed".
    if [[ ! -e "$_FAKE_NIX_STATE_DIR/booted-system" ]]; then
        _fake_nix_write_atomic "$_FAKE_NIX_STATE_DIR/booted-system" "$current"
    fi
}

fake_nix_main() {
    _FAKE_NIX_FLAVOUR=$1
    shift
    case "$_FAKE_NIX_FLAVOUR" in
    nixos) _FAKE_NIX_PROG=nixos-rebuild ;;
    darwin) _FAKE_NIX_PROG=darwin-rebuild ;;
    home-manager) _FAKE_NIX_PROG=home-manager ;;
    *)
        echo "_fake-nix.sh: unknown flavour '$_FAKE_NIX_FLAVOUR'" >&2
        exit 2
        ;;
    esac

    trap _fake_nix_on_signal TERM INT
    trap _fake_nix_kill_child EXIT

    local action="" flake="" have_flake=0
    while (($# > 0)); do
        case "$1" in
        --flake)
            (($# >= 2)) || _fake_nix_usage_error "option '--flake' requires an argument"
            flake=$2
            have_flake=1
            shift 2
            continue
            ;;
        --flake=*)
            flake=${1#--flake=}
            have_flake=1
            ;;
        --version)
            echo "$_FAKE_NIX_PROG (NixFleet fake) 25.05"
            exit 0
            ;;
        -h | --help)
            echo "usage: $_FAKE_NIX_PROG {switch|build} --flake <repo-dir>#<host>"
            exit 0
            ;;
        # Harmless flags a caller might pass to the real tools; they change nothing here.
        -L | --print-build-logs | --show-trace | --impure | --refresh | -v | --verbose | \
            --keep-going | -k | --fallback | --use-remote-sudo | --sudo | --fast | \
            --no-write-lock-file | --no-out-link)
            ;;
        -*)
            _fake_nix_usage_error "unrecognised flag '$1'"
            ;;
        *)
            [[ -z "$action" ]] || _fake_nix_usage_error "unexpected argument '$1'"
            action=$1
            ;;
        esac
        shift
    done

    case "$action" in
    switch | build) ;;
    "") _fake_nix_usage_error "no subcommand given" ;;
    *) _fake_nix_usage_error "unknown subcommand '$action'" ;;
    esac
    ((have_flake)) || _fake_nix_usage_error "missing --flake <repo-dir>#<host>"
    [[ "$flake" == *"#"* ]] || _fake_nix_usage_error "malformed flake reference '$flake' (expected <repo-dir>#<host>)"

    _FAKE_NIX_REPO=${flake%%#*}
    _FAKE_NIX_HOST=${flake#*#}
    # Accept the URL spellings of a local flake too.
    _FAKE_NIX_REPO=${_FAKE_NIX_REPO#path:}
    _FAKE_NIX_REPO=${_FAKE_NIX_REPO#git+file://}
    [[ -n "$_FAKE_NIX_REPO" ]] || _fake_nix_usage_error "malformed flake reference '$flake': empty repository path"
    [[ "$_FAKE_NIX_HOST" =~ ^[A-Za-z0-9_][A-Za-z0-9_.@+-]*$ ]] ||
        _fake_nix_usage_error "malformed flake reference '$flake': bad host attribute '$_FAKE_NIX_HOST'"

    _FAKE_NIX_DURATION=${NIXFLEET_FAKE_DURATION:-3}
    if ! [[ "$_FAKE_NIX_DURATION" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]]; then
        echo "$_FAKE_NIX_PROG: ignoring invalid NIXFLEET_FAKE_DURATION='$_FAKE_NIX_DURATION', using 3" >&2
        _FAKE_NIX_DURATION=3
    fi

    local fail_code=${NIXFLEET_FAKE_EXIT:-1}
    if ! [[ "$fail_code" =~ ^[0-9]+$ ]] || ((10#$fail_code > 255)); then
        fail_code=1
    fi
    fail_code=$((10#$fail_code))

    if [[ ! -d "$_FAKE_NIX_REPO" ]]; then
        echo "error: getting status of '$_FAKE_NIX_REPO': No such file or directory" >&2
        exit "$fail_code"
    fi

    _FAKE_NIX_REV=$(git -C "$_FAKE_NIX_REPO" rev-parse --short=7 HEAD 2>/dev/null) || _FAKE_NIX_REV=dirty
    [[ -n "$_FAKE_NIX_REV" ]] || _FAKE_NIX_REV=dirty
    _fake_nix_system_name
    _fake_nix_path "$_FAKE_NIX_SYSTEM_NAME"
    local result=$_FAKE_NIX_PATH

    _FAKE_NIX_STATE_DIR=${NIXFLEET_FAKE_STATE_DIR:-}
    _FAKE_NIX_GENERATION=0
    if [[ -n "$_FAKE_NIX_STATE_DIR" ]]; then
        _fake_nix_read_generation
    fi
    local next_generation=$((_FAKE_NIX_GENERATION + 1))

    _fake_nix_plan_build
    if [[ "${NIXFLEET_FAKE_FAIL:-}" == 1 || -f "$_FAKE_NIX_REPO/hosts/$_FAKE_NIX_HOST/FAIL_BUILD" ]]; then
        _fake_nix_plan_failure
        _fake_nix_play
        exit "$fail_code"
    fi

    case "$_FAKE_NIX_FLAVOUR" in
    nixos) _fake_nix_plan_derivations etc-os-release unit-sshd.service system-units "etc" system-path ;;
    darwin) _fake_nix_plan_derivations launchd-org.nixos.nix-daemon.plist "etc" system-applications system-path ;;
    home-manager) _fake_nix_plan_derivations hm-session-vars.sh home-manager-files home-manager-path ;;
    esac
    _fake_nix_path "$_FAKE_NIX_SYSTEM_NAME.drv"
    _err "building '$_FAKE_NIX_PATH'..."

    if [[ "$action" == build ]]; then
        _out "$result"
        _fake_nix_play
        exit 0
    fi

    _fake_nix_plan_activation "$next_generation"
    _fake_nix_play
    if [[ -n "$_FAKE_NIX_STATE_DIR" ]]; then
        mkdir -p "$_FAKE_NIX_STATE_DIR"
        _fake_nix_commit_state "$result" "$next_generation"
    fi
    exit 0
}

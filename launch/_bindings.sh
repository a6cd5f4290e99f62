# Sourced by the launchers: binding_flags NAME "a=1;b=2" sets the array NAME to
# (--gin_bindings=a=1 --gin_bindings=b=2); an empty list gives an empty array.
binding_flags() {
  local -n flags="$1"
  local bindings b
  flags=()
  [ -n "$2" ] || return 0
  IFS=';' read -r -a bindings <<<"$2"
  for b in "${bindings[@]}"; do flags+=("--gin_bindings=$b"); done
}

// `cloister completion bash|zsh`: a completion script generated from the command tree itself, so
// every command and option commander knows is completed, and nothing else. zsh uses the same
// function through bashcompinit (shipped with zsh).

/** "path words" → {subcommands, options} for every command, e.g. "" (root), "user", "user create". */
function table(program) {
  const out = {};
  const globals = program.options.map((o) => o.long).filter(Boolean);
  const walk = (cmd, path) => {
    const subs = cmd.commands.map((c) => c.name()).filter((n) => n !== "help");
    const opts = [...new Set([...cmd.options.map((o) => o.long).filter(Boolean), ...(path ? [] : []), ...globals, "--help"])];
    out[path] = { subs, opts };
    for (const c of cmd.commands) walk(c, path ? `${path} ${c.name()}` : c.name());
  };
  walk(program, "");
  return out;
}

export function completionScript(program, shell) {
  const t = table(program);
  const cases = Object.entries(t)
    .map(([path, { subs, opts }]) => `    "${path}") subs="${subs.join(" ")}"; opts="${opts.join(" ")}" ;;`)
    .join("\n");
  const bash = `# cloister ${shell} completion. Load it with:
#   source <(cloister completion ${shell})
# or save it: cloister completion bash > ~/.local/share/bash-completion/completions/cloister
_cloister() {
  # zsh's bashcompinit fills COMP_WORDS from 1 but counts COMP_CWORD from 0: o shifts the index.
  # ("path" is not used as a name: zsh ties it to PATH.)
  local cur cmdpath word i subs opts o=0
  [[ -n "\${ZSH_VERSION:-}" ]] && o=1
  cur="\${COMP_WORDS[COMP_CWORD+o]}"
  cmdpath=""
  # The command path: the words before the cursor that name subcommands.
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i+o]}"
    case "$word" in -*) continue ;; esac
    _cloister_table "$cmdpath"
    case " $subs " in *" $word "*) cmdpath="\${cmdpath:+$cmdpath }$word" ;; esac
  done
  _cloister_table "$cmdpath"
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  fi
  [[ \${#COMPREPLY[@]} -eq 0 && "$cur" != -* ]] && COMPREPLY=($(compgen -f -- "$cur"))
  return 0
}
_cloister_table() {
  case "$1" in
${cases}
    *) subs=""; opts="--help" ;;
  esac
}
`;
  if (shell === "bash") return `${bash}complete -o filenames -F _cloister cloister\n`;
  return `#compdef cloister\n${bash}autoload -U +X bashcompinit && bashcompinit\ncomplete -o filenames -F _cloister cloister\n`;
}

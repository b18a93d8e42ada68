#!/bin/sh
# /usr/sbin/sendmail inside a CGI script's box (docs/cgi.md, "Mail from
# scripts"): reads one message on stdin, as `sendmail -t` does, and hands
# it to the suite over the box's mail channel (fd 3). The suite sends it
# only to the tenant's forms.recipients (from its To:, Cc: and Bcc:
# lines), rate-limited, through the durable queue. The usual flags
# (-t, -i, -oi, -f <from>, -F <name>) are accepted; addresses given as
# arguments are not (the allow-list comes from the message itself).
for a in "$@"; do
  case "$a" in
    -*) ;;
    *) [ "$prev" = "-f" ] || [ "$prev" = "-F" ] || { echo "sendmail: recipients come from the message (-t) only" >&2; exit 64; } ;;
  esac
  prev="$a"
done
[ -e /proc/self/fd/3 ] || { echo "sendmail: no mail channel here" >&2; exit 75; }
# One line, `M <the message in base64>`, written as it is encoded: no subshell to hold it first (one process fewer per mail).
{ printf 'M '; head -c 262144 | base64 -w0; echo; } >&3

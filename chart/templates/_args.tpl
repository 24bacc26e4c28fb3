{{/*
stamp-sender's arguments, as YAML list items, from .Values.sender (flags: docs/cli.md),
in the order of services/supervisor/commands.py, the one builder of the command lines.
*/}}
{{- define "stamp-bpf.senderArgs" -}}
{{- $s := .Values.sender -}}
- {{ $s.interface | quote }}
{{- range $s.reflectorIPs }}
- {{ . | quote }}
{{- end }}
{{- /* Both may be given (the sender keeps the two sets of sessions apart), as with the
supervisor; services/supervisor/commands.py builds the same list (tests/test_command_line.py). */}}
{{- if or $s.reflectorDNS (not $s.reflectorIPs) }}
- --reflector-dns
- {{ include "stamp-bpf.reflectorDNS" . | quote }}
- --dns-interval
- {{ toString $s.dnsInterval | quote }}
{{- if $s.maxPeers }}
- --max-peers
- {{ int $s.maxPeers | quote }}
{{- end }}
{{- end }}
- --address-family
- {{ toString $s.addressFamily | quote }}
- --source-port
- {{ int $s.sourcePort | quote }}
- --dest-port
- {{ int $s.destinationPort | quote }}
- --count
- {{ int64 $s.count | quote }}
- --interval
- {{ toString $s.interval | quote }}
- --timeout
- {{ toString $s.timeout | quote }}
{{- include "stamp-bpf.authArgs" . }}
- --zmq
- {{ include "stamp-bpf.zmqEndpoint" . | quote }}
- --log-format
- json
{{- if $s.histogram.enabled }}
{{ include "stamp-bpf.histArgs" (dict "histogram" $s.histogram "component" "sender") }}
- --histpath
- {{ $s.histogram.path | quote }}
{{- end }}
{{- if $s.enforceSync }}
- --enforce-sync
{{- end }}
{{- if $s.enforcePTP }}
- --enforce-ptp
{{- end }}
{{- if $s.debug }}
- --debug
{{- end }}
{{- end }}

{{/*
stamp-reflector's arguments, as YAML list items, from .Values.reflector.
*/}}
{{- define "stamp-bpf.reflectorArgs" -}}
{{- $r := .Values.reflector -}}
- {{ $r.interface | quote }}
- --port
- {{ int $r.port | quote }}
- --max-sessions
- {{ int $r.maxSessions | quote }}
- --max-rate
- {{ toString $r.maxRate | quote }}
- --burst
- {{ int $r.burst | quote }}
{{- if $r.allowedSources }}
- --allow-file
- {{ include "stamp-bpf.allowFile" . | quote }}
{{- end }}
{{- include "stamp-bpf.authArgs" . }}
- --zmq
- {{ include "stamp-bpf.zmqEndpoint" . | quote }}
- --log-format
- json
{{- if $r.histogram.enabled }}
{{ include "stamp-bpf.histArgs" (dict "histogram" $r.histogram "component" "reflector") }}
- --histpath
- {{ $r.histogram.path | quote }}
{{- end }}
{{- if $r.output }}
- --output
{{- end }}
{{- if $r.enforceSync }}
- --enforce-sync
{{- end }}
{{- if $r.enforcePTP }}
- --enforce-ptp
{{- end }}
{{- if $r.debug }}
- --debug
{{- end }}
{{- end }}

{{/*
--auth-key-file with the mounted Secret's key (authenticated mode), or nothing.
The path is the volume of stamp-bpf.daemonset; commands.py's auth_args the same.
*/}}
{{- define "stamp-bpf.authArgs" -}}
{{- if .Values.auth.existingSecret }}
- --auth-key-file
- "/etc/stamp-bpf/auth/key"
{{- end }}
{{- end }}

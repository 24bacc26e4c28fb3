{{/*
The chart name, cut to 63 characters.
*/}}
{{- define "stamp-bpf.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, cut to 53 characters so that "-reflector" still fits
in a 63-character name.
*/}}
{{- define "stamp-bpf.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 53 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "stamp-bpf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels shared by every pod of the release; the PodMonitor selects on them.
*/}}
{{- define "stamp-bpf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stamp-bpf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "stamp-bpf.labels" -}}
helm.sh/chart: {{ include "stamp-bpf.chart" . }}
{{ include "stamp-bpf.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stamp-bpf
{{- end }}

{{/*
Name of the ServiceAccount the pods use.
*/}}
{{- define "stamp-bpf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stamp-bpf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository:tag, from an image block whose empty fields
fall back to global.image, and an empty tag to the chart's appVersion.
Fails on an empty repository.
*/}}
{{- define "stamp-bpf.image" -}}
{{- $g := .root.Values.global.image }}
{{- $repo := default $g.repository .image.repository }}
{{- $tag := default (default .root.Chart.AppVersion $g.tag) .image.tag }}
{{- if not $repo }}
{{- fail "global.image.repository must not be empty: build the image from this repository (docs/image.md) and name it here" }}
{{- end }}
{{- printf "%s:%s" $repo (toString $tag) }}
{{- end }}

{{/*
Name of the reflectors' headless Service.
*/}}
{{- define "stamp-bpf.reflectorService" -}}
{{- printf "%s-reflector" (include "stamp-bpf.fullname" .) }}
{{- end }}

{{/*
The DNS name the sender resolves for its reflectors when sender.reflectorIPs is empty.
*/}}
{{- define "stamp-bpf.reflectorDNS" -}}
{{- if .Values.sender.reflectorDNS }}
{{- .Values.sender.reflectorDNS }}
{{- else }}
{{- printf "%s.%s.svc.%s" (include "stamp-bpf.reflectorService" .) .Release.Namespace .Values.global.clusterDomain }}
{{- end }}
{{- end }}

{{/*
The ZeroMQ endpoint the service and its exporter share (the default of all three commands).
*/}}
{{/*
The reflector's allow-list file: the allowed-sources ConfigMap, mounted as a folder
so that kubelet updates it in place (a subPath mount would never change).
*/}}
{{- define "stamp-bpf.allowDir" -}}
/etc/stamp-bpf/allowed-sources
{{- end }}
{{- define "stamp-bpf.allowFile" -}}
{{ include "stamp-bpf.allowDir" . }}/list
{{- end }}

{{- define "stamp-bpf.zmqEndpoint" -}}
ipc:///run/stamp-bpf/records.sock
{{- end }}

{{/*
Histogram arguments --hist BINS FLOOR CEIL, as YAML list items, from a histogram block.
Fails when the ceiling is not above the floor.
*/}}
{{- define "stamp-bpf.histArgs" -}}
{{- $h := .histogram }}
{{- range $k := list "floor" "ceiling" }}
{{- $x := float64 (get $h $k) }}
{{- if or (lt $x 0.0) (gt $x 110.0) }}
{{- fail (printf "%s.histogram.%s is %v: it must be from 0 to 110 (10*log10 of the delay in ns)" $.component $k (get $h $k)) }}
{{- end }}
{{- end }}
{{- if le (float64 $h.ceiling) (float64 $h.floor) }}
{{- fail (printf "%s.histogram.ceiling (%v) must be above %s.histogram.floor (%v)" .component $h.ceiling .component $h.floor) }}
{{- end -}}
- --hist
- {{ int $h.bins | quote }}
- {{ toString $h.floor | quote }}
- {{ toString $h.ceiling | quote }}
{{- end }}

{{/*
Checks across values that the schema cannot express; fails with one clear line.
*/}}
{{- define "stamp-bpf.validate" -}}
{{- if not (or .Values.sender.enabled .Values.reflector.enabled) }}
{{- fail "sender.enabled and reflector.enabled are both false: there is nothing to deploy" }}
{{- end }}
{{- if and .Values.sender.enabled .Values.reflector.enabled (eq (int .Values.sender.metricsPort) (int .Values.reflector.metricsPort)) }}
{{- fail (printf "sender.metricsPort and reflector.metricsPort are both %v: both DaemonSets use each node's network, so their exporters need different ports" .Values.sender.metricsPort) }}
{{- end }}
{{- if .Values.sender.enabled }}
{{- range $k := list "interval" "timeout" "dnsInterval" }}
{{- if le (float64 (get $.Values.sender $k)) 0.0 }}
{{- fail (printf "sender.%s is %v: it must be a number of seconds above 0" $k (get $.Values.sender $k)) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $c := list "sender" "reflector" }}
{{- if and $.Values.exporter.buckets (get $.Values $c).histogram.enabled }}
{{- fail (printf "exporter.buckets and %s.histogram.enabled both set the exporter's buckets: use one of them" $c) }}
{{- end }}
{{- end }}
{{- if and .Values.sender.enabled (not .Values.sender.reflectorIPs) (not .Values.sender.reflectorDNS) (not .Values.reflector.enabled) }}
{{- fail "the sender has no reflector to measure to: set sender.reflectorIPs or sender.reflectorDNS, or enable the reflector" }}
{{- end }}
{{- end }}

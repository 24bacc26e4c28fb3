{{/*
One DaemonSet of the release: the service container (sender or reflector) and
its exporter sidecar, sharing the record socket's emptyDir.
Takes a dict: root (the top context), component ("sender" or "reflector"),
values (.Values.<component>) and serviceArgs (the service's arguments, YAML list items).
*/}}
{{- define "stamp-bpf.daemonset" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $g := $root.Values.global }}
{{- $ex := $root.Values.exporter }}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ include "stamp-bpf.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "stamp-bpf.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  selector:
    matchLabels:
      {{- include "stamp-bpf.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
  {{- with $g.updateStrategy }}
  updateStrategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "stamp-bpf.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
        {{- with $g.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $g.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "stamp-bpf.serviceAccountName" $root }}
      automountServiceAccountToken: false
      # The node's network: the TC programs attach to the node's interface.
      hostNetwork: true
      # Resolve cluster names (the reflector Service) from the host network.
      dnsPolicy: ClusterFirstWithHostNet
      {{- with $g.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $g.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.security.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "stamp-bpf.image" (dict "root" $root "image" (dict)) }}
          imagePullPolicy: {{ $g.image.pullPolicy }}
          command:
            - stamp-{{ .component }}
          args:
            {{- .serviceArgs | nindent 12 }}
            {{- range $v.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          {{- with $root.Values.security.containerSecurityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if $ex.serviceTimeout }}
          # The exporter sidecar answers for this container: /healthz/service fails
          # until its first health record, then once none came for
          # exporter.serviceTimeout seconds. The startup probe leaves bcc's compile
          # up to 5 minutes for the first one.
          startupProbe:
            httpGet:
              path: /healthz/service
              port: {{ int $v.metricsPort }}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 30
          livenessProbe:
            httpGet:
              path: /healthz/service
              port: {{ int $v.metricsPort }}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          {{- end }}
          volumeMounts:
            - name: records
              mountPath: /run/stamp-bpf
            - name: tmp
              mountPath: /tmp
            {{- if $root.Values.auth.existingSecret }}
            - name: auth-key
              mountPath: /etc/stamp-bpf/auth
              readOnly: true
            {{- end }}
            {{- if and (eq .component "reflector") $v.allowedSources }}
            - name: allowed-sources
              mountPath: {{ include "stamp-bpf.allowDir" $root }}
              readOnly: true
            {{- end }}
            {{- if $g.hostKernelHeaders }}
            - name: lib-modules
              mountPath: /lib/modules
              readOnly: true
            - name: usr-src
              mountPath: /usr/src
              readOnly: true
            {{- end }}
        - name: exporter
          image: {{ include "stamp-bpf.image" (dict "root" $root "image" $ex.image) }}
          imagePullPolicy: {{ default $g.image.pullPolicy $ex.image.pullPolicy }}
          command:
            - stamp-exporter
          env:
            # The node's name (downward API) names this node's addresses in
            # stamp_node_address_info: no API rights needed.
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
          args:
            - --listen
            - {{ printf "0.0.0.0:%d" (int $v.metricsPort) | quote }}
            - --zmq
            - {{ include "stamp-bpf.zmqEndpoint" $root | quote }}
            - --idle-timeout
            - {{ int $ex.idleTimeout | quote }}
            {{- if $ex.serviceTimeout }}
            - --service-timeout
            - {{ toString $ex.serviceTimeout | quote }}
            {{- end }}
            {{- if eq .component "reflector" }}
            - --max-reflector-sessions
            - {{ int $v.maxSessions | quote }}
            {{- end }}
            - --log-format
            - json
            - --node-name
            - $(NODE_NAME)
            {{- with $ex.buckets }}
            - --buckets
            - {{ join "," . | quote }}
            {{- end }}
            {{- if and (eq .component "reflector") (not $v.delayHistogram) }}
            - --no-reflector-histogram
            {{- end }}
            {{- if $v.histogram.enabled }}
            {{- include "stamp-bpf.histArgs" (dict "histogram" $v.histogram "component" .component) | nindent 12 }}
            {{- end }}
            {{- if $ex.debug }}
            - --debug
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ int $v.metricsPort }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz/exporter
              port: metrics
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /healthz/exporter
              port: metrics
            periodSeconds: 10
            timeoutSeconds: 5
          {{- with $ex.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $ex.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: records
              mountPath: /run/stamp-bpf
      volumes:
        # The ZeroMQ ipc:// socket between the service and its exporter.
        - name: records
          emptyDir:
            medium: Memory
            sizeLimit: 1Mi
        # The service's /tmp: histogram files and bcc's scratch files.
        - name: tmp
          emptyDir: {}
        {{- with $root.Values.auth.existingSecret }}
        # The HMAC key of authenticated mode, readable by its owner only
        # (the services refuse a key file readable by everyone).
        - name: auth-key
          secret:
            secretName: {{ . | quote }}
            defaultMode: 0400
            items:
              - key: {{ $root.Values.auth.secretKey | quote }}
                path: key
        {{- end }}
        {{- if and (eq .component "reflector") $v.allowedSources }}
        # reflector.allowedSources; kubelet rewrites it in place on a change.
        - name: allowed-sources
          configMap:
            name: {{ include "stamp-bpf.fullname" $root }}-allowed-sources
        {{- end }}
        {{- if $g.hostKernelHeaders }}
        # The node's kernel headers for bcc; /usr/src at its own path, so that
        # /lib/modules/<release>/build links resolve.
        - name: lib-modules
          hostPath:
            path: /lib/modules
            type: Directory
        - name: usr-src
          hostPath:
            path: /usr/src
            type: Directory
        {{- end }}
      {{- with $g.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $g.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or $g.tolerations $g.tolerateAllTaints }}
      tolerations:
        {{- if $g.tolerateAllTaints }}
        - operator: Exists
        {{- end }}
        {{- with $g.tolerations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
{{- end }}

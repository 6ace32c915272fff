{{/* Names, labels and the environment every streams container shares. */}}

{{- define "streams.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streams.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "streams.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "streams.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streams
{{- end -}}

{{- define "streams.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streams.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streams.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* terminationGracePeriodSeconds: always above STREAMS_SHUTDOWN_TIMEOUT_S */}}
{{- define "streams.gracePeriodS" -}}
{{- add (ceil .Values.worker.shutdownTimeoutS | int) (max 1 (.Values.worker.terminationGraceExtraS | int)) -}}
{{- end -}}

{{- define "streams.env" -}}
{{- $k := .Values.kafka -}}
- name: STREAMS_KAFKA_BOOTSTRAP
{{- if $k.bootstrapSecret.name }}
  valueFrom:
    secretKeyRef: {name: {{ $k.bootstrapSecret.name | quote }}, key: {{ $k.bootstrapSecret.key | quote }}}
{{- else }}
  value: {{ required "kafka.bootstrap or kafka.bootstrapSecret.name is required" $k.bootstrap | quote }}
{{- end }}
- name: STREAMS_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if $k.sasl.mechanism }}
- name: STREAMS_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: STREAMS_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ required "kafka.sasl.secretName is required with a SASL mechanism" $k.sasl.secretName | quote }}, key: {{ $k.sasl.usernameKey | quote }}}
- name: STREAMS_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $k.sasl.secretName | quote }}, key: {{ $k.sasl.passwordKey | quote }}}
{{- end }}
{{- if $k.tls.secretName }}
- name: STREAMS_SSL_CAFILE
  value: /etc/streams/kafka-tls/{{ $k.tls.caKey }}
{{- if $k.tls.certKey }}
- name: STREAMS_SSL_CERTFILE
  value: /etc/streams/kafka-tls/{{ $k.tls.certKey }}
- name: STREAMS_SSL_KEYFILE
  value: /etc/streams/kafka-tls/{{ required "kafka.tls.keyKey is required with kafka.tls.certKey" $k.tls.keyKey }}
{{- end }}
{{- end }}
{{- if $k.topicPrefix }}
- name: STREAMS_TOPIC_PREFIX
  value: {{ $k.topicPrefix | quote }}
{{- end }}
- name: STREAMS_APP_ID
  value: {{ $k.appId | quote }}
{{- if $k.replicationFactorOverride }}
- name: STREAMS_REPLICATION_FACTOR_OVERRIDE
  value: {{ $k.replicationFactorOverride | quote }}
{{- end }}
{{- if .Values.database.secretName }}
- name: STREAMS_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.database.secretName | quote }}, key: {{ .Values.database.key | quote }}}
{{- end }}
- name: STREAMS_HOME
  value: /var/lib/streams
{{- if .Values.topics.catalog }}
- name: STREAMS_CATALOG_PATH
  value: /etc/streams/catalog/topics.yaml
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Writable emptyDirs (the root filesystem is read-only) and the Secret/ConfigMap files. */}}
{{- define "streams.volumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {medium: Memory, sizeLimit: 64Mi}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  secret: {secretName: {{ .Values.kafka.tls.secretName | quote }}, defaultMode: 0440}
{{- end }}
{{- if .Values.topics.catalog }}
- name: catalog
  configMap: {name: {{ include "streams.fullname" . }}-catalog}
{{- end }}
{{- end -}}

{{- define "streams.volumeMounts" -}}
- {name: home, mountPath: /var/lib/streams}
- {name: tmp, mountPath: /tmp}
{{- if .Values.kafka.tls.secretName }}
- {name: kafka-tls, mountPath: /etc/streams/kafka-tls, readOnly: true}
{{- end }}
{{- if .Values.topics.catalog }}
- {name: catalog, mountPath: /etc/streams/catalog, readOnly: true}
{{- end }}
{{- end -}}

{{- define "streams.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

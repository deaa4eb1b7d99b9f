{{/*
The components, in the order they are rendered. Each is a subcommand of the
image (`sendstack-bridge <component>`) and a key of the values.
*/}}
{{- define "sendstack-bridge.components" -}}
stream webhooks commands
{{- end -}}

{{- define "sendstack-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name; component objects append "-<component>", so it is
kept short enough for that (and for "-metrics") to fit in 63 characters.
*/}}
{{- define "sendstack-bridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 44 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sendstack-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sendstack-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sendstack-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sendstack-bridge.labels" -}}
helm.sh/chart: {{ include "sendstack-bridge.chart" . }}
{{ include "sendstack-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sendstack-bridge
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "stream"). */}}
{{- define "sendstack-bridge.componentSelectorLabels" -}}
{{ include "sendstack-bridge.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sendstack-bridge.componentLabels" -}}
{{ include "sendstack-bridge.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sendstack-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sendstack-bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sendstack-bridge.secretName" -}}
{{- default (include "sendstack-bridge.fullname" .) .Values.credentials.existingSecret -}}
{{- end -}}

{{- define "sendstack-bridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The BRIDGE_* variables of one component's ConfigMap, as YAML:
`config`, then `<component>.config` over it, then what the chart owns (the
ops and webhook listeners). Empty values are left out. Called with
(dict "root" $ "component" "stream").
*/}}
{{- define "sendstack-bridge.componentConfig" -}}
{{- $root := .root -}}
{{- $env := dict -}}
{{- range $name, $value := $root.Values.config -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- range $name, $value := (index $root.Values .component).config -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- range $name, $value := $env -}}
{{- if eq (toString $value) "" -}}
{{- $_ := unset $env $name -}}
{{- end -}}
{{- end -}}
{{- $_ := set $env "BRIDGE_OPS_HOST" "0.0.0.0" -}}
{{- $_ := set $env "BRIDGE_OPS_PORT" ($root.Values.ops.port | int | toString) -}}
{{- if eq .component "webhooks" -}}
{{- $_ := set $env "BRIDGE_WEBHOOK_HOST" "0.0.0.0" -}}
{{- $_ := set $env "BRIDGE_WEBHOOK_PORT" ($root.Values.webhooks.port | int | toString) -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/*
Credentials as (file name in the mount, Secret key, BRIDGE_*_FILE variable)
triples, as YAML; the SASL pair only with credentials.kafkaSasl.
*/}}
{{- define "sendstack-bridge.credentialFiles" -}}
{{- $keys := .Values.credentials.keys -}}
- file: sendstack-app-id
  key: {{ $keys.sendstackAppId | quote }}
  variable: BRIDGE_SENDSTACK_APP_ID_FILE
- file: sendstack-app-secret
  key: {{ $keys.sendstackAppSecret | quote }}
  variable: BRIDGE_SENDSTACK_APP_SECRET_FILE
{{- if .Values.credentials.kafkaSasl }}
- file: kafka-sasl-username
  key: {{ $keys.kafkaSaslUsername | quote }}
  variable: BRIDGE_KAFKA_SASL_USERNAME_FILE
- file: kafka-sasl-password
  key: {{ $keys.kafkaSaslPassword | quote }}
  variable: BRIDGE_KAFKA_SASL_PASSWORD_FILE
{{- end }}
{{- end -}}

{{/* Chart-level checks that the schema cannot express. */}}
{{- define "sendstack-bridge.validate" -}}
{{- range $component := splitList " " (include "sendstack-bridge.components" .) -}}
{{- $values := index $.Values $component -}}
{{- if $values.enabled -}}
{{- $env := include "sendstack-bridge.componentConfig" (dict "root" $ "component" $component) | fromYaml -}}
{{- $grace := index $env "BRIDGE_SHUTDOWN_GRACE_SECONDS" | default "20" -}}
{{- if ge (float64 $grace) (float64 $.Values.terminationGracePeriodSeconds) -}}
{{- fail (printf "%s: BRIDGE_SHUTDOWN_GRACE_SECONDS (%s) must be below terminationGracePeriodSeconds (%v), or the kubelet kills the bridge before it has flushed to Kafka" $component $grace $.Values.terminationGracePeriodSeconds) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.stream.enabled -}}
{{- $env := include "sendstack-bridge.componentConfig" (dict "root" . "component" "stream") | fromYaml -}}
{{- if and (eq (lower (toString (index $env "BRIDGE_STREAM_SINGLE_SESSION" | default "false"))) "true") (ne .Values.stream.strategy.type "Recreate") -}}
{{- fail "stream: with BRIDGE_STREAM_SINGLE_SESSION=true the old and the new pod of a rolling update would end each other's session; set stream.strategy.type=Recreate" -}}
{{- end -}}
{{- end -}}
{{- end -}}

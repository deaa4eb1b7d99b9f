{{/*
The pod template of one component, shared by the Deployments (webhooks,
commands) and the stream's StatefulSet: its `metadata` and `spec`, to be
included under `template:`. Called with (dict "root" $ "component" "stream").
*/}}
{{- define "sendstack-bridge.podTemplate" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $values := index $root.Values $component -}}
{{- $fullname := include "sendstack-bridge.fullname" $root -}}
{{- $credentials := include "sendstack-bridge.credentialFiles" $root | fromYamlArray -}}
{{- $stream := eq $component "stream" -}}
{{- $journal := and $stream $root.Values.stream.journal.enabled -}}
{{- $accounts := and $stream $root.Values.stream.accounts -}}
{{- $accountTopics := list -}}
{{- if $accounts -}}
{{- $accountTopics = include "sendstack-bridge.accountTopicFiles" $root | fromYamlArray -}}
{{- end -}}
metadata:
  labels:
    {{- include "sendstack-bridge.componentSelectorLabels" . | nindent 4 }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Roll the pods when their configuration or credentials change.
    checksum/config: {{ include "sendstack-bridge.componentConfig" . | sha256sum }}
    {{- if and $stream $root.Values.stream.mapping }}
    checksum/mapping: {{ $root.Values.stream.mapping | sha256sum }}
    {{- end }}
    {{- if $accounts }}
    # Which Secrets and keys, and topics: not the Secrets' content.
    checksum/accounts: {{ toJson $root.Values.stream.accounts | sha256sum }}
    {{- end }}
    {{- if not $root.Values.credentials.existingSecret }}
    checksum/credentials: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "sendstack-bridge.serviceAccountName" $root }}
  # The bridge calls no Kubernetes API.
  automountServiceAccountToken: false
  # Service links would inject variables such as
  # BRIDGE_SENDSTACK_BRIDGE_WEBHOOKS_SERVICE_HOST (for a release named
  # "bridge"), and the bridge refuses BRIDGE_* names it does not know.
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # fsGroup: the stream's journal volume (a PVC) is writable by the bridge.
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ $component }}
      image: {{ include "sendstack-bridge.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        - {{ $component }}
      ports:
        - name: ops
          containerPort: {{ $root.Values.ops.port }}
          protocol: TCP
        {{- if eq $component "webhooks" }}
        - name: http
          containerPort: {{ $values.port }}
          protocol: TCP
        {{- end }}
      envFrom:
        - configMapRef:
            name: {{ $fullname }}-{{ $component }}
      env:
        {{- range $credentials }}
        - name: {{ .variable }}
          value: {{ printf "%s/%s" $root.Values.credentialsMountPath .file | quote }}
        {{- end }}
        {{- if and $stream $root.Values.stream.mapping }}
        - name: BRIDGE_STREAM_MAPPING_FILE
          value: /etc/sendstack-bridge/mapping/mapping.yaml
        {{- end }}
        {{- if $accounts }}
        - name: BRIDGE_STREAM_ACCOUNTS_DIR
          value: {{ include "sendstack-bridge.accountsDir" $root }}
        {{- end }}
      livenessProbe:
        httpGet:
          path: /livez
          port: ops
        {{- toYaml $root.Values.probes.liveness | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: ops
        {{- toYaml $root.Values.probes.readiness | nindent 8 }}
      resources:
        {{- toYaml $values.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: credentials
          mountPath: {{ $root.Values.credentialsMountPath }}
          readOnly: true
        {{- if and $stream $root.Values.stream.mapping }}
        - name: mapping
          mountPath: /etc/sendstack-bridge/mapping
          readOnly: true
        {{- end }}
        {{- if $accounts }}
        - name: accounts
          mountPath: {{ include "sendstack-bridge.accountsDir" $root }}
          readOnly: true
        {{- end }}
        {{- if $journal }}
        # BRIDGE_JOURNAL_DIR (in the ConfigMap) names this directory.
        - name: journal
          mountPath: {{ include "sendstack-bridge.journalDir" $root }}
        {{- end }}
        {{- with $root.Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: {{ $root.Values.tmpSizeLimit }}
    - name: credentials
      secret:
        secretName: {{ include "sendstack-bridge.secretName" $root }}
        defaultMode: 0440
        items:
          {{- range $credentials }}
          - key: {{ .key }}
            path: {{ .file }}
          {{- end }}
    {{- if and $stream $root.Values.stream.mapping }}
    - name: mapping
      configMap:
        name: {{ $fullname }}-stream-mapping
    {{- end }}
    {{- if $accounts }}
    # A directory per account of stream.accounts (BRIDGE_STREAM_ACCOUNTS_DIR):
    # app_id and app_secret from its Secret, topic_* from the chart's
    # -stream-accounts ConfigMap.
    - name: accounts
      projected:
        defaultMode: 0440
        sources:
          {{- range $root.Values.stream.accounts }}
          - secret:
              name: {{ .existingSecret }}
              items:
                - key: {{ .appIdKey | default "app_id" | quote }}
                  path: {{ printf "%s/app_id" .name | quote }}
                - key: {{ .appSecretKey | default "app_secret" | quote }}
                  path: {{ printf "%s/app_secret" .name | quote }}
          {{- end }}
          {{- with $accountTopics }}
          - configMap:
              name: {{ $fullname }}-stream-accounts
              items:
                {{- range . }}
                - key: {{ .key | quote }}
                  path: {{ .path | quote }}
                {{- end }}
          {{- end }}
    {{- end }}
    {{- if and $journal (eq $root.Values.stream.journal.volume "emptyDir") }}
    # Survives a restart of the container (crash, OOM kill), not the pod's
    # deletion or eviction. Over sizeLimit, the kubelet evicts the pod.
    - name: journal
      emptyDir:
        sizeLimit: {{ $root.Values.stream.journal.size | quote }}
    {{- end }}
    {{- with $root.Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if and $root.Values.spreadAcrossNodes (not $stream) (gt (int $values.replicas) 1) }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "sendstack-bridge.componentSelectorLabels" . | nindent 10 }}
  {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $affinity := deepCopy ($root.Values.affinity | default dict) }}
  {{- $anti := $root.Values.stream.antiAffinity }}
  {{- if and $stream (gt (int $values.replicas) 1) (ne $anti.type "none") (not (hasKey $affinity "podAntiAffinity")) }}
  {{- /* The stream's replicas on different nodes: one node's loss leaves a standby. */}}
  {{- $term := dict "topologyKey" ($anti.topologyKey | default "kubernetes.io/hostname") "labelSelector" (dict "matchLabels" (include "sendstack-bridge.componentSelectorLabels" . | fromYaml)) }}
  {{- if eq $anti.type "required" }}
  {{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
  {{- else }}
  {{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
  {{- end }}
  {{- end }}
  {{- with $affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

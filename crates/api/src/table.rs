//! Server-side table printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! mirroring kube-apiserver's printers (k8s.io/kubernetes/pkg/printers/internalversion).
//!
//! The API server always generates tables with `Wide: true`, so every row carries the
//! cells of all columns (priority 1 columns included); clients such as kubectl hide the
//! priority > 0 columns unless `-o wide` is requested.
//!
//! Kinds without a printer use either kube-apiserver's default table convertor
//! (`Name`, `Created At`: Role, ClusterRole, LimitRange, CustomResourceDefinition) or,
//! for everything else (e.g. custom resources), the CRD default (`Name`, `Age`).

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::{Value, json};

/// A `meta.k8s.io/v1` `TableColumnDefinition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

impl Column {
    /// The `TableColumnDefinition` JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// A priority 0 column.
const fn c(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

/// A priority 1 (wide) column.
const fn w(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: META_NAME,
    priority: 0,
};
const AGE: Column = c("Age", "string", META_CREATION);
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";

// ---------------------------------------------------------------------------
// Column descriptions: the SwaggerDoc() texts kube-apiserver uses.
// ---------------------------------------------------------------------------

const META_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const META_CREATION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const POD_IP: &str = "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const POD_NODE_NAME: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const POD_NOMINATED: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const POD_READINESS_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
const RC_SPEC_REPLICAS: &str = "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller";
const RC_SPEC_SELECTOR: &str = "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values that must match in order to be controlled by this replication controller, if empty defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const RC_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller";
const RC_STATUS_READY: &str = "The number of ready replicas for this replication controller.";
const JOB_STATUS_SUCCEEDED: &str = "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.";
const JOB_SPEC_SELECTOR: &str = "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const CJ_SCHEDULE: &str = "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.";
const CJ_TIMEZONE: &str = "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones";
const CJ_SUSPEND: &str = "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.";
const CJ_ACTIVE: &str = "A list of pointers to currently running jobs.";
const CJ_LAST_SCHEDULE: &str =
    "Information when was the last time the job was successfully scheduled.";
const SVC_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const SVC_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const SVC_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const SVC_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const SVC_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";
const EP_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
const NODE_KUBELET_VERSION: &str = "Kubelet Version reported by the node.";
const NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const NODE_OS_IMAGE: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const NODE_KERNEL: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const NODE_CRI: &str = "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
const EV_LAST: &str = "The time at which the most recent occurrence of this event was recorded.";
const EV_TYPE: &str =
    "Type of this event (Normal, Warning), new types could be added in the future";
const EV_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const EV_INVOLVED: &str = "The object that this event is about.";
const EV_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const EV_SOURCE: &str =
    "The component reporting this event. Should be a short machine understandable string.";
const EV_MESSAGE: &str = "A human-readable description of the status of this operation.";
const EV_FIRST: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const EV_COUNT: &str = "The number of times this event has occurred.";
const SECRET_TYPE: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const SECRET_DATA: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";
const SA_SECRETS: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret";
const PV_CAPACITY: &str = "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity";
const PV_ACCESS_MODES: &str = "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes";
const PV_RECLAIM: &str = "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming";
const PV_PHASE: &str = "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase";
const PV_CLAIM: &str = "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding";
const PV_REASON: &str = "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.";
const PV_VOLUME_MODE: &str = "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.";
const PVC_PHASE: &str = "phase represents the current phase of PersistentVolumeClaim.";
const PVC_VOLUME_NAME: &str =
    "volumeName is the binding reference to the PersistentVolume backing this claim.";
const PVC_CAPACITY: &str = "capacity represents the actual resources of the underlying volume.";
const PVC_ACCESS_MODES: &str = "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1";
const PVC_VOLUME_MODE: &str = "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.";
const HPA_REF: &str = "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.";
const HPA_METRICS: &str = "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).  The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods.  Ergo, metrics used must decrease as the pod count is increased, and vice-versa.  See the individual metric source types for more information about how each type of metric must respond. If not set, the default metric will be set to 80% average CPU utilization.";
const HPA_MIN: &str = "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured.  Scaling is active as long as at least one metric value is available.";
const HPA_MAX: &str = "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas.";
const HPA_CURRENT: &str = "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.";
const CM_DATA: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";
const RB_ROLE_REF: &str = "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.";
const CRB_ROLE_REF: &str = "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.";
const LEASE_HOLDER: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
const SC_PROVISIONER: &str = "provisioner indicates the type of the provisioner.";
const SC_RECLAIM: &str = "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.";
const SC_BINDING_MODE: &str = "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.";
const SC_EXPANSION: &str =
    "allowVolumeExpansion shows whether the storage class allow volume expand.";
const CR_REVISION: &str = "Revision indicates the revision of the state represented by Data.";
const PC_VALUE: &str = "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.";
const PC_GLOBAL_DEFAULT: &str = "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.";
const PC_PREEMPTION: &str = "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.";
const ES_ADDRESS_TYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType \"IPv4\" and \"IPv6\". No semantics are defined for the \"FQDN\" type.";
const ES_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.";
const ES_ENDPOINTS: &str = "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";
const VA_ATTACHER: &str = "attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName().";
const VA_PV: &str = "persistentVolumeName represents the name of the persistent volume to attach.";
const VA_NODE: &str = "nodeName represents the node that the volume should be attached to.";
const VA_ATTACHED: &str = "attached indicates the volume is successfully attached. This field must only be set by the entity completing the attach operation, i.e. the external-attacher.";
const SCIDR_CIDRS: &str = "CIDRs defines the IP blocks in CIDR notation (e.g. \"192.168.0.0/24\" or \"2001:db8::/64\") from which to assign service cluster IPs. Max of two CIDRs is allowed, one of each IP family. This field is immutable.";
const IPADDR_PARENT: &str = "ParentRef references the resource that an IPAddress is attached to. An IPAddress must reference a parent object.";
const CSR_SIGNER: &str = "signerName indicates the requested signer, and is a qualified name.\n\nList/watch requests for CertificateSigningRequests can filter on this field using a \"spec.signerName=NAME\" fieldSelector.\n\nWell-known Kubernetes signers are:\n 1. \"kubernetes.io/kube-apiserver-client\": issues client certificates that can be used to authenticate to kube-apiserver.\n  Requests for this signer are never auto-approved by kube-controller-manager, can be issued by the \"csrsigning\" controller in kube-controller-manager.\n 2. \"kubernetes.io/kube-apiserver-client-kubelet\": issues client certificates that kubelets use to authenticate to kube-apiserver.\n  Requests for this signer can be auto-approved by the \"csrapproving\" controller in kube-controller-manager, and can be issued by the \"csrsigning\" controller in kube-controller-manager.\n 3. \"kubernetes.io/kubelet-serving\" issues serving certificates that kubelets use to serve TLS endpoints, which kube-apiserver can connect to securely.\n  Requests for this signer are never auto-approved by kube-controller-manager, and can be issued by the \"csrsigning\" controller in kube-controller-manager.\n\nMore details are available at https://k8s.io/docs/reference/access-authn-authz/certificate-signing-requests/#kubernetes-signers\n\nCustom signerNames can also be specified. The signer defines:\n 1. Trust distribution: how trust (CA bundles) are distributed.\n 2. Permitted subjects: and behavior when a disallowed subject is requested.\n 3. Required, permitted, or forbidden x509 extensions in the request (including whether subjectAltNames are allowed, which types, restrictions on allowed values) and behavior when a disallowed extension is requested.\n 4. Required, permitted, or forbidden key usages / extended key usages.\n 5. Expiration/certificate lifetime: whether it is fixed by the signer, configurable by the admin.\n 6. Whether or not requests for CA certificates are allowed.";
const CSR_REQUEST: &str = "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block. When serialized as JSON or YAML, the data is additionally base64-encoded.";
const CSR_EXPIRATION: &str = "expirationSeconds is the requested duration of validity of the issued certificate. The certificate signer may issue a certificate with a different validity duration so a client must check the delta between the notBefore and and notAfter fields in the issued certificate to determine the actual duration.\n\nThe v1.22+ in-tree implementations of the well-known Kubernetes signers will honor this field as long as the requested duration is not greater than the maximum duration they will honor per the --cluster-signing-duration CLI flag to the Kubernetes controller manager.\n\nCertificate signers may not honor this field for various reasons:\n\n  1. Old signer that is unaware of the field (such as the in-tree\n     implementations prior to v1.22)\n  2. Signer whose configured maximum is shorter than the requested duration\n  3. Signer whose configured minimum is longer than the requested duration\n\nThe minimum valid value for expirationSeconds is 600, i.e. 10 minutes.";
const CSR_CONDITIONS: &str = "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".";
const CSID_ATTACH: &str = "attachRequired indicates this CSI volume driver requires an attach operation (because it implements the CSI ControllerPublishVolume() method), and that the Kubernetes attach detach controller should call the attach volume interface which checks the volumeattachment status and waits until the volume is attached before proceeding to mounting. The CSI external-attacher coordinates with CSI volume driver and updates the volumeattachment status when the attach operation is complete. If the CSIDriverRegistry feature gate is enabled and the value is specified to false, the attach operation will be skipped. Otherwise the attach operation will be called.\n\nThis field is immutable.";
const CSID_PODINFO: &str = "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations, if set to true. If set to false, pod information will not be passed on mount. Default is false.\n\nThe CSI driver specifies podInfoOnMount as part of driver deployment. If true, Kubelet will pass pod information as VolumeContext in the CSI NodePublishVolume() calls. The CSI driver is responsible for parsing and validating the information passed in as VolumeContext.\n\nThe following VolumeContext will be passed if podInfoOnMount is set to true. This list might grow, but the prefix will be used. \"csi.storage.k8s.io/pod.name\": pod.Name \"csi.storage.k8s.io/pod.namespace\": pod.Namespace \"csi.storage.k8s.io/pod.uid\": string(pod.UID) \"csi.storage.k8s.io/ephemeral\": \"true\" if the volume is an ephemeral inline volume\n                                defined by a CSIVolumeSource, otherwise \"false\"\n\n\"csi.storage.k8s.io/ephemeral\" is a new feature in Kubernetes 1.16. It is only required for drivers which support both the \"Persistent\" and \"Ephemeral\" VolumeLifecycleMode. Other drivers can leave pod info disabled and/or ignore this field. As Kubernetes 1.15 doesn't support this field, drivers can only support one mode when deployed on such a cluster and the deployment determines which mode that is, for example via a command line parameter of the driver.\n\nThis field was immutable in Kubernetes \\< 1.29 and now is mutable.";
const CSID_CAPACITY: &str = "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information, if set to true.\n\nThe check can be enabled immediately when deploying a driver. In that case, provisioning new volumes with late binding will pause until the driver deployment has published some suitable CSIStorageCapacity object.\n\nAlternatively, the driver can be deployed with the field unset or false and it can be flipped later when storage capacity information has been published.\n\nThis field was immutable in Kubernetes \\<= 1.22 and now is mutable.";
const CSID_TOKENS: &str = "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication. Kubelet will pass the tokens in VolumeContext in the CSI NodePublishVolume calls. The CSI driver should parse and validate the following VolumeContext: \"csi.storage.k8s.io/serviceAccount.tokens\": {\n  \"\\<audience\\>\": {\n    \"token\": \\<token\\>,\n    \"expirationTimestamp\": \\<expiration timestamp in RFC3339\\>,\n  },\n  ...\n}\n\nNote: Audience in each TokenRequest should be different and at most one token is empty string. To receive a new token after expiry, RequiresRepublish can be used to trigger NodePublishVolume periodically.";
const CSID_REPUBLISH: &str = "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume. This field defaults to false.\n\nNote: After a successful initial NodePublishVolume call, subsequent calls to NodePublishVolume should only update the contents of the volume. New mount points will not be seen by a running container.";
const CSID_MODES: &str = "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports. The default if the list is empty is \"Persistent\", which is the usage defined by the CSI specification and implemented in Kubernetes via the usual PV/PVC mechanism.\n\nThe other mode is \"Ephemeral\". In this mode, volumes are defined inline inside the pod spec with CSIVolumeSource and their lifecycle is tied to the lifecycle of that pod. A driver has to be aware of this because it is only going to get a NodePublishVolume call for such a volume.\n\nFor more information about implementing this mode, see https://kubernetes-csi.github.io/docs/ephemeral-local-volumes.html A driver can support one or more of these modes and more modes may be added in the future.\n\nThis field is beta. This field is immutable.";
const CSISC_CLASS: &str = "storageClassName represents the name of the StorageClass that the reported capacity applies to. It must meet the same requirements as the name of a StorageClass object (non-empty, DNS subdomain). If that object no longer exists, the CSIStorageCapacity object is obsolete and should be removed by its creator. This field is immutable.";
const CSISC_CAPACITY: &str = "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest with topology and parameters that match the previous fields.\n\nThe semantic is currently (CSI spec 1.2) defined as: The available capacity, in bytes, of the storage that can be used to provision volumes. If not set, that information is currently unavailable.";
const FS_PL: &str =
    "`name` is the name of the priority level configuration being referenced Required.";
const FS_PRECEDENCE: &str = "`matchingPrecedence` is used to choose among the FlowSchemas that match a given request. The chosen FlowSchema is among those with the numerically lowest (which we take to be logically highest) MatchingPrecedence.  Each MatchingPrecedence value must be ranged in [1,10000]. Note that if the precedence is not specified, it will be set to 1000 as default.";
const FS_DISTINGUISHER: &str = "`distinguisherMethod` defines how to compute the flow distinguisher for requests that match this schema. `nil` specifies that the distinguisher is disabled and thus will always be the empty string.";
const PL_TYPE: &str = "`type` indicates whether this priority level is subject to limitation on request execution.  A value of `\"Exempt\"` means that requests of this priority level are not subject to a limit (and thus are never queued) and do not detract from the capacity made available to other priority levels.  A value of `\"Limited\"` means that (a) requests of this priority level _are_ subject to limits and (b) some of the server's limited capacity is made available exclusively to this priority level. Required.";
const PL_NCS: &str = "`nominalConcurrencyShares` (NCS) contributes to the computation of the NominalConcurrencyLimit (NominalCL) of this level. This is the number of execution seats available at this priority level. This is used both for requests dispatched from this priority level as well as requests dispatched from other priority levels borrowing seats from this level. The server's concurrency limit (ServerCL) is divided among the Limited priority levels in proportion to their NCS values:\n\nNominalCL(i)  = ceil( ServerCL * NCS(i) / sum_ncs ) sum_ncs = sum[priority level k] NCS(k)\n\nBigger numbers mean a larger nominal concurrency limit, at the expense of every other priority level.\n\nIf not specified, this field defaults to a value of 30.\n\nSetting this field to zero supports the construction of a \"jail\" for this priority level that is used to hold some request(s)";
const PL_QUEUES: &str = "`queues` is the number of queues for this priority level. The queues exist independently at each apiserver. The value must be positive.  Setting it to 1 effectively precludes shufflesharding and thus makes the distinguisher method of associated flow schemas irrelevant.  This field has a default value of 64.";
const PL_HANDSIZE: &str = "`handSize` is a small positive number that configures the shuffle sharding of requests into queues.  When enqueuing a request at this priority level the request's flow identifier (a string pair) is hashed and the hash value is used to shuffle the list of queues and deal a hand of the size specified here.  The request is put into one of the shortest queues in that hand. `handSize` must be no larger than `queues`, and should be significantly smaller (so that a few heavy flows do not saturate most of the queues).  See the user-facing documentation for more extensive guidance on setting this field.  This field has a default value of 8.";
const PL_QLL: &str = "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given queue of this priority level at a time; excess requests are rejected.  This value must be positive.  If not specified, it will be defaulted to 50.";
const SCALE_SPEC_REPLICAS: &str =
    "replicas is the desired number of instances for the scaled object.";
const SCALE_STATUS_REPLICAS: &str =
    "replicas is the actual number of observed instances of the scaled object.";
// extensions/v1beta1 SwaggerDoc texts (the printer refers to these types).
const RS_SPEC_REPLICAS: &str = "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller";
const RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller/#what-is-a-replicationcontroller";
const RS_STATUS_READY: &str =
    "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition.";
const RS_SPEC_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const DS_DESIRED: &str = "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const DS_CURRENT: &str = "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/";
const DS_READY: &str = "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.";
const DS_UPDATED: &str = "The total number of nodes that are running updated daemon pod";
const DS_AVAILABLE: &str = "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)";
const DS_SELECTOR: &str = "A label query over pods that are managed by the daemon set. Must match in order to be controlled. If empty, defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const DEPLOY_UPDATED: &str = "Total number of non-terminated pods targeted by this deployment that have the desired template spec.";
const DEPLOY_AVAILABLE: &str = "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.";
const DEPLOY_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";
const NETPOL_POD_SELECTOR: &str = "Selects the pods to which this NetworkPolicy object applies.  The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods.  In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace.";
const POD_NODE_SELECTOR: &str = "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/";

// ---------------------------------------------------------------------------
// Printer selection
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    PodTemplate,
    PodDisruptionBudget,
    ReplicationController,
    ReplicaSet,
    DaemonSet,
    Job,
    CronJob,
    Service,
    Ingress,
    IngressClass,
    StatefulSet,
    Endpoints,
    Node,
    Event,
    Namespace,
    Secret,
    ServiceAccount,
    PersistentVolume,
    PersistentVolumeClaim,
    ComponentStatus,
    Deployment,
    HorizontalPodAutoscaler,
    ConfigMap,
    NetworkPolicy,
    RoleBinding,
    ClusterRoleBinding,
    CertificateSigningRequest,
    Lease,
    StorageClass,
    ControllerRevision,
    ResourceQuota,
    PriorityClass,
    RuntimeClass,
    VolumeAttachment,
    EndpointSlice,
    CsiNode,
    CsiDriver,
    CsiStorageCapacity,
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
    FlowSchema,
    PriorityLevelConfiguration,
    ServiceCidr,
    IpAddress,
    Scale,
    /// kube-apiserver's default table convertor: Name, Created At.
    CreatedAt,
    /// The CRD default: Name, Age.
    Default,
}

fn printer(group: &str, kind: &str) -> Printer {
    use Printer as P;
    let group = if group == "core" { "" } else { group };
    match (group, kind) {
        ("", "Pod") => P::Pod,
        ("", "PodTemplate") => P::PodTemplate,
        ("", "ReplicationController") => P::ReplicationController,
        ("", "Service") => P::Service,
        ("", "Endpoints") => P::Endpoints,
        ("", "Node") => P::Node,
        ("" | "events.k8s.io", "Event") => P::Event,
        ("", "Namespace") => P::Namespace,
        ("", "Secret") => P::Secret,
        ("", "ServiceAccount") => P::ServiceAccount,
        ("", "PersistentVolume") => P::PersistentVolume,
        ("", "PersistentVolumeClaim") => P::PersistentVolumeClaim,
        ("", "ComponentStatus") => P::ComponentStatus,
        ("", "ConfigMap") => P::ConfigMap,
        ("", "ResourceQuota") => P::ResourceQuota,
        ("", "LimitRange") => P::CreatedAt,
        ("policy", "PodDisruptionBudget") => P::PodDisruptionBudget,
        ("apps" | "extensions", "ReplicaSet") => P::ReplicaSet,
        ("apps" | "extensions", "DaemonSet") => P::DaemonSet,
        ("apps" | "extensions", "Deployment") => P::Deployment,
        ("apps", "StatefulSet") => P::StatefulSet,
        ("apps", "ControllerRevision") => P::ControllerRevision,
        ("batch", "Job") => P::Job,
        ("batch", "CronJob") => P::CronJob,
        ("networking.k8s.io" | "extensions", "Ingress") => P::Ingress,
        ("networking.k8s.io", "IngressClass") => P::IngressClass,
        ("networking.k8s.io" | "extensions", "NetworkPolicy") => P::NetworkPolicy,
        ("networking.k8s.io", "ServiceCIDR") => P::ServiceCidr,
        ("networking.k8s.io", "IPAddress") => P::IpAddress,
        ("autoscaling", "HorizontalPodAutoscaler") => P::HorizontalPodAutoscaler,
        ("autoscaling", "Scale") => P::Scale,
        ("rbac.authorization.k8s.io", "RoleBinding") => P::RoleBinding,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => P::ClusterRoleBinding,
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => P::CreatedAt,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => P::CreatedAt,
        ("certificates.k8s.io", "CertificateSigningRequest") => P::CertificateSigningRequest,
        ("coordination.k8s.io", "Lease") => P::Lease,
        ("storage.k8s.io", "StorageClass") => P::StorageClass,
        ("storage.k8s.io", "VolumeAttachment") => P::VolumeAttachment,
        ("storage.k8s.io", "CSINode") => P::CsiNode,
        ("storage.k8s.io", "CSIDriver") => P::CsiDriver,
        ("storage.k8s.io", "CSIStorageCapacity") => P::CsiStorageCapacity,
        ("scheduling.k8s.io", "PriorityClass") => P::PriorityClass,
        ("node.k8s.io", "RuntimeClass") => P::RuntimeClass,
        ("discovery.k8s.io", "EndpointSlice") => P::EndpointSlice,
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            P::MutatingWebhookConfiguration
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            P::ValidatingWebhookConfiguration
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => P::FlowSchema,
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            P::PriorityLevelConfiguration
        }
        _ => P::Default,
    }
}

/// The column definitions kube-apiserver returns for `group`/`kind` (all columns,
/// including the priority 1 "wide" ones). `group` is `""` (or `"core"`) for the
/// legacy core group.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    use Printer as P;
    let containers = w("Containers", "string", CONTAINERS_DESC);
    let images = w("Images", "string", IMAGES_DESC);
    match printer(group, kind) {
        P::Pod => vec![
            NAME,
            c(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            c(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            c(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            w("IP", "string", POD_IP),
            w("Node", "string", POD_NODE_NAME),
            w("Nominated Node", "string", POD_NOMINATED),
            w("Readiness Gates", "string", POD_READINESS_GATES),
        ],
        P::PodTemplate => vec![
            NAME,
            c("Containers", "string", CONTAINERS_DESC),
            c("Images", "string", IMAGES_DESC),
            c("Pod Labels", "string", "The labels for the pod template."),
        ],
        P::PodDisruptionBudget => vec![
            NAME,
            c(
                "Min Available",
                "string",
                "The minimum number of pods that must be available.",
            ),
            c(
                "Max Unavailable",
                "string",
                "The maximum number of pods that may be unavailable.",
            ),
            c(
                "Allowed Disruptions",
                "integer",
                "Calculated number of pods that may be disrupted at this time.",
            ),
            AGE,
        ],
        P::ReplicationController => vec![
            NAME,
            c("Desired", "integer", RC_SPEC_REPLICAS),
            c("Current", "integer", RC_STATUS_REPLICAS),
            c("Ready", "integer", RC_STATUS_READY),
            AGE,
            containers,
            images,
            w("Selector", "string", RC_SPEC_SELECTOR),
        ],
        P::ReplicaSet => vec![
            NAME,
            c("Desired", "integer", RS_SPEC_REPLICAS),
            c("Current", "integer", RS_STATUS_REPLICAS),
            c("Ready", "integer", RS_STATUS_READY),
            AGE,
            containers,
            images,
            w("Selector", "string", RS_SPEC_SELECTOR),
        ],
        P::DaemonSet => vec![
            NAME,
            c("Desired", "integer", DS_DESIRED),
            c("Current", "integer", DS_CURRENT),
            c("Ready", "integer", DS_READY),
            c("Up-to-date", "integer", DS_UPDATED),
            c("Available", "integer", DS_AVAILABLE),
            c("Node Selector", "string", POD_NODE_SELECTOR),
            AGE,
            containers,
            images,
            w("Selector", "string", DS_SELECTOR),
        ],
        P::Job => vec![
            NAME,
            c("Status", "string", "Status of the job."),
            c("Completions", "string", JOB_STATUS_SUCCEEDED),
            c("Duration", "string", "Time required to complete the job."),
            AGE,
            containers,
            images,
            w("Selector", "string", JOB_SPEC_SELECTOR),
        ],
        P::CronJob => vec![
            NAME,
            c("Schedule", "string", CJ_SCHEDULE),
            c("Timezone", "string", CJ_TIMEZONE),
            c("Suspend", "boolean", CJ_SUSPEND),
            c("Active", "integer", CJ_ACTIVE),
            c("Last Schedule", "string", CJ_LAST_SCHEDULE),
            AGE,
            containers,
            images,
            w("Selector", "string", JOB_SPEC_SELECTOR),
        ],
        P::Service => vec![
            NAME,
            c("Type", "string", SVC_TYPE),
            c("Cluster-IP", "string", SVC_CLUSTER_IP),
            c("External-IP", "string", SVC_EXTERNAL_IPS),
            c("Port(s)", "string", SVC_PORTS),
            AGE,
            w("Selector", "string", SVC_SELECTOR),
        ],
        P::Ingress => vec![
            NAME,
            c(
                "Class",
                "string",
                "The name of the IngressClass resource that should be used for additional configuration",
            ),
            c(
                "Hosts",
                "string",
                "Hosts that incoming requests are matched against before the ingress rule",
            ),
            c(
                "Address",
                "string",
                "Address is a list containing ingress points for the load-balancer",
            ),
            c("Ports", "string", "Ports of TLS configurations that open"),
            AGE,
        ],
        P::IngressClass => vec![
            NAME,
            c(
                "Controller",
                "string",
                "Controller that is responsible for handling this class",
            ),
            c(
                "Parameters",
                "string",
                "A reference to a resource with additional parameters",
            ),
            AGE,
        ],
        P::StatefulSet => vec![
            NAME,
            c("Ready", "string", "Number of the pod with ready state"),
            AGE,
            containers,
            images,
        ],
        P::Endpoints => vec![NAME, c("Endpoints", "string", EP_SUBSETS), AGE],
        P::Node => vec![
            NAME,
            c("Status", "string", "The status of the node"),
            c("Roles", "string", "The roles of the node"),
            AGE,
            c("Version", "string", NODE_KUBELET_VERSION),
            w("Internal-IP", "string", NODE_ADDRESSES),
            w("External-IP", "string", NODE_ADDRESSES),
            w("OS-Image", "string", NODE_OS_IMAGE),
            w("Kernel-Version", "string", NODE_KERNEL),
            w("Container-Runtime", "string", NODE_CRI),
        ],
        P::Event => vec![
            c("Last Seen", "string", EV_LAST),
            c("Type", "string", EV_TYPE),
            c("Reason", "string", EV_REASON),
            c("Object", "string", EV_INVOLVED),
            w("Subobject", "string", EV_FIELD_PATH),
            w("Source", "string", EV_SOURCE),
            c("Message", "string", EV_MESSAGE),
            w("First Seen", "string", EV_FIRST),
            w("Count", "string", EV_COUNT),
            Column {
                priority: 1,
                ..NAME
            },
        ],
        P::Namespace => vec![
            NAME,
            c("Status", "string", "The status of the namespace"),
            AGE,
        ],
        P::Secret => vec![
            NAME,
            c("Type", "string", SECRET_TYPE),
            c("Data", "string", SECRET_DATA),
            AGE,
        ],
        P::ServiceAccount => vec![NAME, c("Secrets", "string", SA_SECRETS), AGE],
        P::PersistentVolume => vec![
            NAME,
            c("Capacity", "string", PV_CAPACITY),
            c("Access Modes", "string", PV_ACCESS_MODES),
            c("Reclaim Policy", "string", PV_RECLAIM),
            c("Status", "string", PV_PHASE),
            c("Claim", "string", PV_CLAIM),
            c("StorageClass", "string", "StorageClass of the pv"),
            c(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pv",
            ),
            c("Reason", "string", PV_REASON),
            AGE,
            w("VolumeMode", "string", PV_VOLUME_MODE),
        ],
        P::PersistentVolumeClaim => vec![
            NAME,
            c("Status", "string", PVC_PHASE),
            c("Volume", "string", PVC_VOLUME_NAME),
            c("Capacity", "string", PVC_CAPACITY),
            c("Access Modes", "string", PVC_ACCESS_MODES),
            c("StorageClass", "string", "StorageClass of the pvc"),
            c(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pvc",
            ),
            AGE,
            w("VolumeMode", "string", PVC_VOLUME_MODE),
        ],
        P::ComponentStatus => vec![
            NAME,
            c("Status", "string", "Status of the component conditions"),
            c("Message", "string", "Message of the component conditions"),
            c("Error", "string", "Error of the component conditions"),
        ],
        P::Deployment => vec![
            NAME,
            c("Ready", "string", "Number of the pod with ready state"),
            c("Up-to-date", "string", DEPLOY_UPDATED),
            c("Available", "string", DEPLOY_AVAILABLE),
            AGE,
            containers,
            images,
            w("Selector", "string", DEPLOY_SELECTOR),
        ],
        P::HorizontalPodAutoscaler => vec![
            NAME,
            c("Reference", "string", HPA_REF),
            c("Targets", "string", HPA_METRICS),
            c("MinPods", "string", HPA_MIN),
            c("MaxPods", "string", HPA_MAX),
            c("Replicas", "string", HPA_CURRENT),
            AGE,
        ],
        P::ConfigMap => vec![NAME, c("Data", "string", CM_DATA), AGE],
        P::NetworkPolicy => vec![NAME, c("Pod-Selector", "string", NETPOL_POD_SELECTOR), AGE],
        P::RoleBinding => vec![
            NAME,
            c("Role", "string", RB_ROLE_REF),
            AGE,
            w("Users", "string", "Users in the roleBinding"),
            w("Groups", "string", "Groups in the roleBinding"),
            w(
                "ServiceAccounts",
                "string",
                "ServiceAccounts in the roleBinding",
            ),
        ],
        P::ClusterRoleBinding => vec![
            NAME,
            c("Role", "string", CRB_ROLE_REF),
            AGE,
            w("Users", "string", "Users in the clusterRoleBinding"),
            w("Groups", "string", "Groups in the clusterRoleBinding"),
            w(
                "ServiceAccounts",
                "string",
                "ServiceAccounts in the clusterRoleBinding",
            ),
        ],
        P::CertificateSigningRequest => vec![
            NAME,
            AGE,
            c("SignerName", "string", CSR_SIGNER),
            c("Requestor", "string", CSR_REQUEST),
            c("RequestedDuration", "string", CSR_EXPIRATION),
            c("Condition", "string", CSR_CONDITIONS),
        ],
        P::Lease => vec![NAME, c("Holder", "string", LEASE_HOLDER), AGE],
        P::StorageClass => vec![
            NAME,
            c("Provisioner", "string", SC_PROVISIONER),
            c("ReclaimPolicy", "string", SC_RECLAIM),
            c("VolumeBindingMode", "string", SC_BINDING_MODE),
            c("AllowVolumeExpansion", "string", SC_EXPANSION),
            AGE,
        ],
        P::ControllerRevision => vec![
            NAME,
            c("Controller", "string", "Controller of the object"),
            c("Revision", "string", CR_REVISION),
            AGE,
        ],
        P::ResourceQuota => vec![
            NAME,
            c(
                "Request",
                "string",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ),
            c(
                "Limit",
                "string",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
            AGE,
        ],
        P::PriorityClass => vec![
            NAME,
            c("Value", "integer", PC_VALUE),
            c("Global-Default", "boolean", PC_GLOBAL_DEFAULT),
            AGE,
            c("PreemptionPolicy", "string", PC_PREEMPTION),
        ],
        // The upstream description reads ObjectMeta's (missing) "handler" doc: empty.
        P::RuntimeClass => vec![NAME, c("Handler", "string", ""), AGE],
        P::VolumeAttachment => vec![
            NAME,
            Column {
                format: "name",
                ..c("Attacher", "string", VA_ATTACHER)
            },
            c("PV", "string", VA_PV),
            c("Node", "string", VA_NODE),
            c("Attached", "boolean", VA_ATTACHED),
            AGE,
        ],
        P::EndpointSlice => vec![
            NAME,
            c("AddressType", "string", ES_ADDRESS_TYPE),
            c("Ports", "string", ES_PORTS),
            c("Endpoints", "string", ES_ENDPOINTS),
            AGE,
        ],
        P::CsiNode => vec![
            NAME,
            c(
                "Drivers",
                "integer",
                "Drivers indicates the number of CSI drivers registered on the node",
            ),
            AGE,
        ],
        P::CsiDriver => vec![
            NAME,
            c("AttachRequired", "boolean", CSID_ATTACH),
            c("PodInfoOnMount", "boolean", CSID_PODINFO),
            c("StorageCapacity", "boolean", CSID_CAPACITY),
            c("TokenRequests", "string", CSID_TOKENS),
            c("RequiresRepublish", "boolean", CSID_REPUBLISH),
            c("Modes", "string", CSID_MODES),
            AGE,
        ],
        P::CsiStorageCapacity => vec![
            NAME,
            c("StorageClassName", "string", CSISC_CLASS),
            c("Capacity", "string", CSISC_CAPACITY),
        ],
        P::MutatingWebhookConfiguration | P::ValidatingWebhookConfiguration => vec![
            NAME,
            c(
                "Webhooks",
                "integer",
                "Webhooks indicates the number of webhooks registered in this configuration",
            ),
            AGE,
        ],
        P::FlowSchema => vec![
            NAME,
            c("PriorityLevel", "string", FS_PL),
            c("MatchingPrecedence", "string", FS_PRECEDENCE),
            c("DistinguisherMethod", "string", FS_DISTINGUISHER),
            AGE,
            c(
                "MissingPL",
                "string",
                "references a broken or non-existent PriorityLevelConfiguration",
            ),
        ],
        P::PriorityLevelConfiguration => vec![
            NAME,
            c("Type", "string", PL_TYPE),
            c("NominalConcurrencyShares", "string", PL_NCS),
            c("Queues", "string", PL_QUEUES),
            c("HandSize", "string", PL_HANDSIZE),
            c("QueueLengthLimit", "string", PL_QLL),
            AGE,
        ],
        P::ServiceCidr => vec![NAME, c("CIDRs", "string", SCIDR_CIDRS), AGE],
        P::IpAddress => vec![NAME, c("ParentRef", "string", IPADDR_PARENT)],
        P::Scale => vec![
            c("Name", "string", META_NAME),
            c("Desired", "integer", SCALE_SPEC_REPLICAS),
            c("Available", "integer", SCALE_STATUS_REPLICAS),
            AGE,
        ],
        P::CreatedAt => vec![NAME, c("Created At", "date", META_CREATION)],
        P::Default => vec![NAME, c("Age", "date", META_CREATION)],
    }
}

/// The `columnDefinitions` JSON array of a `meta.k8s.io/v1` `Table`.
pub fn columns_json(group: &str, kind: &str) -> Value {
    Value::Array(columns(group, kind).iter().map(Column::to_json).collect())
}

/// The cells of one table row for `obj`, in the order of [`columns`]. `now` is the
/// reference time for ages ("5m", "3d2h", ...).
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    use Printer as P;
    let name = Value::from(st(obj, &["metadata", "name"]));
    let age = Value::from(age(obj, now));
    match printer(group, kind) {
        P::Pod => pod_cells(obj, now),
        P::PodTemplate => {
            let (names, images) = container_cells(get(obj, &["template", "spec", "containers"]));
            vec![
                name,
                names.into(),
                images.into(),
                format_labels(get(obj, &["template", "metadata", "labels"])).into(),
            ]
        }
        P::PodDisruptionBudget => {
            let fmt = |key: &str| match get(obj, &["spec", key]) {
                Value::Null => "N/A".to_string(),
                v => int_or_string(v),
            };
            vec![
                name,
                fmt("minAvailable").into(),
                fmt("maxUnavailable").into(),
                int(obj, &["status", "disruptionsAllowed"]).into(),
                age,
            ]
        }
        P::ReplicationController => {
            let (names, images) =
                container_cells(get(obj, &["spec", "template", "spec", "containers"]));
            vec![
                name,
                opt_int(obj, &["spec", "replicas"]).unwrap_or(1).into(),
                int(obj, &["status", "replicas"]).into(),
                int(obj, &["status", "readyReplicas"]).into(),
                age,
                names.into(),
                images.into(),
                format_labels(get(obj, &["spec", "selector"])).into(),
            ]
        }
        P::ReplicaSet => {
            let (names, images) =
                container_cells(get(obj, &["spec", "template", "spec", "containers"]));
            vec![
                name,
                opt_int(obj, &["spec", "replicas"]).unwrap_or(1).into(),
                int(obj, &["status", "replicas"]).into(),
                int(obj, &["status", "readyReplicas"]).into(),
                age,
                names.into(),
                images.into(),
                format_label_selector(get(obj, &["spec", "selector"])).into(),
            ]
        }
        P::DaemonSet => {
            let (names, images) =
                container_cells(get(obj, &["spec", "template", "spec", "containers"]));
            vec![
                name,
                int(obj, &["status", "desiredNumberScheduled"]).into(),
                int(obj, &["status", "currentNumberScheduled"]).into(),
                int(obj, &["status", "numberReady"]).into(),
                int(obj, &["status", "updatedNumberScheduled"]).into(),
                int(obj, &["status", "numberAvailable"]).into(),
                format_labels(get(obj, &["spec", "template", "spec", "nodeSelector"])).into(),
                age,
                names.into(),
                images.into(),
                format_label_selector(get(obj, &["spec", "selector"])).into(),
            ]
        }
        P::Job => job_cells(obj, now, name, age),
        P::CronJob => {
            let job_spec = get(obj, &["spec", "jobTemplate", "spec"]);
            let (names, images) =
                container_cells(get(job_spec, &["template", "spec", "containers"]));
            let last = match ts(obj, &["status", "lastScheduleTime"]) {
                Some(t) => human_duration(now.duration_since(t)),
                None => "<none>".to_string(),
            };
            let tz = match get(obj, &["spec", "timeZone"]).as_str() {
                Some(tz) => tz.to_string(),
                None => "<none>".to_string(),
            };
            vec![
                name,
                st(obj, &["spec", "schedule"]).into(),
                tz.into(),
                print_bool_ptr(get(obj, &["spec", "suspend"])).into(),
                (arr(obj, &["status", "active"]).len() as i64).into(),
                last.into(),
                age,
                names.into(),
                images.into(),
                format_label_selector(get(job_spec, &["selector"])).into(),
            ]
        }
        P::Service => service_cells(obj, name, age),
        P::Ingress => {
            let class = match get(obj, &["spec", "ingressClassName"]).as_str() {
                Some(c) => c.to_string(),
                None => "<none>".to_string(),
            };
            let ports = if arr(obj, &["spec", "tls"]).is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                name,
                class.into(),
                format_hosts(arr(obj, &["spec", "rules"])).into(),
                load_balancer_status(get(obj, &["status", "loadBalancer"])).into(),
                ports.into(),
                age,
            ]
        }
        P::IngressClass => {
            let params = get(obj, &["spec", "parameters"]);
            let parameters = if params.is_object() {
                let mut p = st(params, &["kind"]).to_string();
                if let Some(g) = params.get("apiGroup").and_then(Value::as_str) {
                    p.push('.');
                    p.push_str(g);
                }
                p.push('/');
                p.push_str(st(params, &["name"]));
                p
            } else {
                "<none>".to_string()
            };
            vec![
                name,
                st(obj, &["spec", "controller"]).into(),
                parameters.into(),
                age,
            ]
        }
        P::StatefulSet => {
            let (names, images) =
                container_cells(get(obj, &["spec", "template", "spec", "containers"]));
            let ready = format!(
                "{}/{}",
                int(obj, &["status", "readyReplicas"]),
                opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
            );
            vec![name, ready.into(), age, names.into(), images.into()]
        }
        P::Endpoints => vec![name, format_endpoints(arr(obj, &["subsets"])).into(), age],
        P::Node => node_cells(obj, name, age),
        P::Event => event_cells(group, obj, now),
        P::Namespace => {
            let phase = match st(obj, &["status", "phase"]) {
                "" => "Active",
                p => p,
            };
            vec![name, phase.into(), age]
        }
        P::Secret => {
            let ty = match st(obj, &["type"]) {
                "" => "Opaque",
                t => t,
            };
            vec![
                name,
                ty.into(),
                (map_len(obj, &["data"]) as i64).into(),
                age,
            ]
        }
        P::ServiceAccount => vec![name, (arr(obj, &["secrets"]).len() as i64).into(), age],
        P::PersistentVolume => {
            let spec = get(obj, &["spec"]);
            let claim = match get(spec, &["claimRef"]) {
                Value::Object(_) => format!(
                    "{}/{}",
                    st(spec, &["claimRef", "namespace"]),
                    st(spec, &["claimRef", "name"])
                ),
                _ => String::new(),
            };
            let phase = if is_set(obj, &["metadata", "deletionTimestamp"]) {
                "Terminating"
            } else {
                st(obj, &["status", "phase"])
            };
            let class = match annotation(obj, "volume.beta.kubernetes.io/storage-class") {
                Some(c) => c.to_string(),
                None => st(spec, &["storageClassName"]).to_string(),
            };
            vec![
                name,
                quantity(get(spec, &["capacity", "storage"])).into(),
                access_modes(arr(spec, &["accessModes"])).into(),
                st(spec, &["persistentVolumeReclaimPolicy"]).into(),
                phase.into(),
                claim.into(),
                class.into(),
                str_or(spec, &["volumeAttributesClassName"], "<unset>").into(),
                st(obj, &["status", "reason"]).into(),
                age,
                str_or(spec, &["volumeMode"], "<unset>").into(),
            ]
        }
        P::PersistentVolumeClaim => {
            let spec = get(obj, &["spec"]);
            let phase = if is_set(obj, &["metadata", "deletionTimestamp"]) {
                "Terminating"
            } else {
                st(obj, &["status", "phase"])
            };
            let volume_name = st(spec, &["volumeName"]);
            let (capacity, modes) = if volume_name.is_empty() {
                (String::new(), String::new())
            } else {
                (
                    quantity(get(obj, &["status", "capacity", "storage"])),
                    access_modes(arr(obj, &["status", "accessModes"])),
                )
            };
            let class = match annotation(obj, "volume.beta.kubernetes.io/storage-class") {
                Some(c) => c.to_string(),
                None => st(spec, &["storageClassName"]).to_string(),
            };
            vec![
                name,
                phase.into(),
                volume_name.into(),
                capacity.into(),
                modes.into(),
                class.into(),
                str_or(spec, &["volumeAttributesClassName"], "<unset>").into(),
                age,
                str_or(spec, &["volumeMode"], "<unset>").into(),
            ]
        }
        P::ComponentStatus => {
            let mut status = "Unknown";
            let mut message = "";
            let mut error = "";
            for cond in arr(obj, &["conditions"]) {
                if st(cond, &["type"]) == "Healthy" {
                    status = if st(cond, &["status"]) == "True" {
                        "Healthy"
                    } else {
                        "Unhealthy"
                    };
                    message = st(cond, &["message"]);
                    error = st(cond, &["error"]);
                    break;
                }
            }
            vec![name, status.into(), message.into(), error.into()]
        }
        P::Deployment => {
            let (names, images) =
                container_cells(get(obj, &["spec", "template", "spec", "containers"]));
            let selector = match label_selector_string(get(obj, &["spec", "selector"])) {
                Ok(s) => s,
                Err(()) => "<invalid>".to_string(),
            };
            let ready = format!(
                "{}/{}",
                int(obj, &["status", "readyReplicas"]),
                opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
            );
            vec![
                name,
                ready.into(),
                int(obj, &["status", "updatedReplicas"]).into(),
                int(obj, &["status", "availableReplicas"]).into(),
                age,
                names.into(),
                images.into(),
                selector.into(),
            ]
        }
        P::HorizontalPodAutoscaler => hpa_cells(obj, name, age),
        P::ConfigMap => {
            let n = map_len(obj, &["data"]) + map_len(obj, &["binaryData"]);
            vec![name, (n as i64).into(), age]
        }
        P::NetworkPolicy => vec![
            name,
            format_label_selector_ref(get(obj, &["spec", "podSelector"])).into(),
            age,
        ],
        P::RoleBinding | P::ClusterRoleBinding => {
            let role_ref = format!(
                "{}/{}",
                st(obj, &["roleRef", "kind"]),
                st(obj, &["roleRef", "name"])
            );
            let (users, groups, sas) = subjects_strings(arr(obj, &["subjects"]));
            vec![
                name,
                role_ref.into(),
                age,
                users.join(", ").into(),
                groups.join(", ").into(),
                sas.join(", ").into(),
            ]
        }
        P::CertificateSigningRequest => {
            let signer = str_or_nonempty(obj, &["spec", "signerName"], "<none>");
            let duration = match opt_int(obj, &["spec", "expirationSeconds"]) {
                Some(secs) => human_duration(SignedDuration::from_secs(secs)),
                None => "<none>".to_string(),
            };
            vec![
                name,
                age,
                signer.into(),
                st(obj, &["spec", "username"]).into(),
                duration.into(),
                csr_status(obj).into(),
            ]
        }
        P::Lease => vec![name, st(obj, &["spec", "holderIdentity"]).into(), age],
        P::StorageClass => {
            let mut display = st(obj, &["metadata", "name"]).to_string();
            if annotation(obj, "storageclass.kubernetes.io/is-default-class") == Some("true")
                || annotation(obj, "storageclass.beta.kubernetes.io/is-default-class")
                    == Some("true")
            {
                display.push_str(" (default)");
            }
            vec![
                display.into(),
                st(obj, &["provisioner"]).into(),
                str_or(obj, &["reclaimPolicy"], "Delete").into(),
                str_or(obj, &["volumeBindingMode"], "Immediate").into(),
                get(obj, &["allowVolumeExpansion"])
                    .as_bool()
                    .unwrap_or(false)
                    .into(),
                age,
            ]
        }
        P::ControllerRevision => {
            let controller = arr(obj, &["metadata", "ownerReferences"])
                .iter()
                .find(|r| get(r, &["controller"]).as_bool() == Some(true))
                .map(|r| {
                    let api_version = st(r, &["apiVersion"]);
                    let group = match api_version.rsplit_once('/') {
                        Some((g, _)) => g,
                        None => "",
                    };
                    let kind = st(r, &["kind"]);
                    let gk = if group.is_empty() {
                        kind.to_string()
                    } else {
                        format!("{kind}.{group}")
                    };
                    if gk.is_empty() {
                        st(r, &["name"]).to_string()
                    } else {
                        format!("{}/{}", gk.to_lowercase(), st(r, &["name"]))
                    }
                })
                .unwrap_or_else(|| "<none>".to_string());
            vec![name, controller.into(), int(obj, &["revision"]).into(), age]
        }
        P::ResourceQuota => {
            let (request, limit) = resource_quota_columns(obj);
            vec![name, request.into(), limit.into(), age]
        }
        P::PriorityClass => vec![
            name,
            int(obj, &["value"]).into(),
            get(obj, &["globalDefault"])
                .as_bool()
                .unwrap_or(false)
                .into(),
            age,
            st(obj, &["preemptionPolicy"]).into(),
        ],
        P::RuntimeClass => vec![name, st(obj, &["handler"]).into(), age],
        P::VolumeAttachment => vec![
            name,
            st(obj, &["spec", "attacher"]).into(),
            st(obj, &["spec", "source", "persistentVolumeName"]).into(),
            st(obj, &["spec", "nodeName"]).into(),
            get(obj, &["status", "attached"])
                .as_bool()
                .unwrap_or(false)
                .into(),
            age,
        ],
        P::EndpointSlice => vec![
            name,
            st(obj, &["addressType"]).into(),
            format_discovery_ports(arr(obj, &["ports"])).into(),
            format_discovery_endpoints(arr(obj, &["endpoints"])).into(),
            age,
        ],
        P::CsiNode => vec![
            name,
            (arr(obj, &["spec", "drivers"]).len() as i64).into(),
            age,
        ],
        P::CsiDriver => {
            let spec = get(obj, &["spec"]);
            let flag = |key: &str, default: bool| get(spec, &[key]).as_bool().unwrap_or(default);
            let modes: Vec<&str> = arr(spec, &["volumeLifecycleModes"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let modes = if modes.is_empty() {
                "<none>".to_string()
            } else {
                modes.join(",")
            };
            let tokens = match get(spec, &["tokenRequests"]) {
                Value::Array(reqs) => reqs
                    .iter()
                    .map(|t| st(t, &["audience"]))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => "<unset>".to_string(),
            };
            vec![
                name,
                flag("attachRequired", true).into(),
                flag("podInfoOnMount", false).into(),
                flag("storageCapacity", false).into(),
                tokens.into(),
                flag("requiresRepublish", false).into(),
                modes.into(),
                age,
            ]
        }
        P::CsiStorageCapacity => {
            let capacity = match get(obj, &["capacity"]) {
                Value::Null => "<unset>".to_string(),
                q => quantity(q),
            };
            vec![name, st(obj, &["storageClassName"]).into(), capacity.into()]
        }
        P::MutatingWebhookConfiguration | P::ValidatingWebhookConfiguration => {
            vec![name, (arr(obj, &["webhooks"]).len() as i64).into(), age]
        }
        P::FlowSchema => {
            let distinguisher = match get(obj, &["spec", "distinguisherMethod"]) {
                Value::Object(_) => st(obj, &["spec", "distinguisherMethod", "type"]).to_string(),
                _ => "<none>".to_string(),
            };
            let missing = arr(obj, &["status", "conditions"])
                .iter()
                .find(|c| st(c, &["type"]) == "Dangling")
                .map(|c| st(c, &["status"]).to_string())
                .unwrap_or_else(|| "?".to_string());
            vec![
                name,
                st(obj, &["spec", "priorityLevelConfiguration", "name"]).into(),
                int(obj, &["spec", "matchingPrecedence"]).into(),
                distinguisher.into(),
                age,
                missing.into(),
            ]
        }
        P::PriorityLevelConfiguration => {
            let none = || Value::from("<none>");
            let limited = get(obj, &["spec", "limited"]);
            let (mut ncs, mut queues, mut hand, mut qll) = (none(), none(), none(), none());
            if limited.is_object() {
                ncs = int(limited, &["nominalConcurrencyShares"]).into();
                let q = get(limited, &["limitResponse", "queuing"]);
                if q.is_object() {
                    queues = int(q, &["queues"]).into();
                    hand = int(q, &["handSize"]).into();
                    qll = int(q, &["queueLengthLimit"]).into();
                }
            }
            vec![
                name,
                st(obj, &["spec", "type"]).into(),
                ncs,
                queues,
                hand,
                qll,
                age,
            ]
        }
        P::ServiceCidr => {
            let cidrs: Vec<&str> = arr(obj, &["spec", "cidrs"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            vec![name, cidrs.join(",").into(), age]
        }
        P::IpAddress => {
            let parent = get(obj, &["spec", "parentRef"]);
            let parent_ref = if parent.is_object() {
                let resource = st(parent, &["resource"]);
                let group = st(parent, &["group"]);
                let mut s = if group.is_empty() {
                    resource.to_lowercase()
                } else {
                    format!("{resource}.{group}").to_lowercase()
                };
                let ns = st(parent, &["namespace"]);
                if !ns.is_empty() {
                    s.push('/');
                    s.push_str(ns);
                }
                s.push('/');
                s.push_str(st(parent, &["name"]));
                s
            } else {
                "<none>".to_string()
            };
            vec![name, parent_ref.into()]
        }
        P::Scale => vec![
            name,
            int(obj, &["spec", "replicas"]).into(),
            int(obj, &["status", "replicas"]).into(),
            age,
        ],
        P::CreatedAt => {
            let created = match ts(obj, &["metadata", "creationTimestamp"]) {
                Some(t) => jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t)
                    .unwrap_or_else(|_| "0001-01-01T00:00:00Z".to_string()),
                None => "0001-01-01T00:00:00Z".to_string(),
            };
            vec![name, created.into()]
        }
        P::Default => vec![name, age],
    }
}

/// Row conditions kube-apiserver attaches to a table row (`TableRow.conditions`):
/// pods in a terminal phase carry a `Completed` condition. Empty for other kinds.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    if printer(group, kind) != Printer::Pod {
        return Vec::new();
    }
    match st(obj, &["status", "phase"]) {
        "Succeeded" => vec![json!({
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        })],
        "Failed" => vec![json!({
            "type": "Completed",
            "status": "True",
            "reason": "Failed",
            "message": "The pod failed.",
        })],
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// Kubernetes' `duration.HumanDuration`: a succinct, ~2-3 significant figure
/// rendering ("5s", "3m2s", "10m", "5h3m", "2d3h", "45d", "3y20d").
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{}h", hours / 24, h)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{}d", hours / 24 / 365, dy)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `translateTimestampSince`: "<unknown>" for a missing timestamp.
fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

fn age(obj: &Value, now: Timestamp) -> String {
    since(ts(obj, &["metadata", "creationTimestamp"]), now)
}

// ---------------------------------------------------------------------------
// Per-kind cells
// ---------------------------------------------------------------------------

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let spec = get(pod, &["spec"]);
    let status = get(pod, &["status"]);
    let init_containers = arr(spec, &["initContainers"]);
    let is_restartable = |name: &str| {
        init_containers
            .iter()
            .rev()
            .find(|c| st(c, &["name"]) == name)
            .is_some_and(|c| st(c, &["restartPolicy"]) == "Always")
    };

    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let mut total = arr(spec, &["containers"]).len();
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = st(status, &["phase"]);
    let mut reason = match st(status, &["reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    for cond in arr(status, &["conditions"]) {
        if st(cond, &["type"]) == "PodScheduled" && st(cond, &["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    total += init_containers
        .iter()
        .filter(|c| st(c, &["restartPolicy"]) == "Always")
        .count();

    let mut initializing = false;
    for (i, cs) in arr(status, &["initContainerStatuses"]).iter().enumerate() {
        restarts += int(cs, &["restartCount"]);
        let last_terminated = last_termination(cs);
        if last_terminated.is_some() && last_terminated > last_restart {
            last_restart = last_terminated;
        }
        let restartable = is_restartable(st(cs, &["name"]));
        if restartable {
            restartable_init_restarts += int(cs, &["restartCount"]);
            if last_terminated.is_some() && last_terminated > last_restartable_init_restart {
                last_restartable_init_restart = last_terminated;
            }
        }
        let terminated = get(cs, &["state", "terminated"]);
        let waiting = get(cs, &["state", "waiting"]);
        if terminated.is_object() && int(terminated, &["exitCode"]) == 0 {
            continue;
        } else if restartable && get(cs, &["started"]).as_bool() == Some(true) {
            if get(cs, &["ready"]).as_bool() == Some(true) {
                ready += 1;
            }
            continue;
        } else if terminated.is_object() {
            reason = match st(terminated, &["reason"]) {
                "" => {
                    let signal = int(terminated, &["signal"]);
                    if signal != 0 {
                        format!("Init:Signal:{signal}")
                    } else {
                        format!("Init:ExitCode:{}", int(terminated, &["exitCode"]))
                    }
                }
                r => format!("Init:{r}"),
            };
        } else if waiting.is_object()
            && !st(waiting, &["reason"]).is_empty()
            && st(waiting, &["reason"]) != "PodInitializing"
        {
            reason = format!("Init:{}", st(waiting, &["reason"]));
        } else {
            reason = format!("Init:{}/{}", i, init_containers.len());
        }
        initializing = true;
        break;
    }

    let initialized = arr(status, &["conditions"])
        .iter()
        .find(|c| st(c, &["type"]) == "Initialized")
        .is_some_and(|c| st(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for cs in arr(status, &["containerStatuses"]).iter().rev() {
            restarts += int(cs, &["restartCount"]);
            let last_terminated = last_termination(cs);
            if last_terminated.is_some() && last_terminated > last_restart {
                last_restart = last_terminated;
            }
            let waiting = get(cs, &["state", "waiting"]);
            let terminated = get(cs, &["state", "terminated"]);
            if waiting.is_object() && !st(waiting, &["reason"]).is_empty() {
                reason = st(waiting, &["reason"]).to_string();
            } else if terminated.is_object() && !st(terminated, &["reason"]).is_empty() {
                reason = st(terminated, &["reason"]).to_string();
            } else if terminated.is_object() {
                let signal = int(terminated, &["signal"]);
                reason = if signal != 0 {
                    format!("Signal:{signal}")
                } else {
                    format!("ExitCode:{}", int(terminated, &["exitCode"]))
                };
            } else if get(cs, &["ready"]).as_bool() == Some(true)
                && get(cs, &["state", "running"]).is_object()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(status, &["conditions"])
                .iter()
                .any(|c| st(c, &["type"]) == "Ready" && st(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    if is_set(pod, &["metadata", "deletionTimestamp"]) {
        if st(status, &["reason"]) == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Failed" && phase != "Succeeded" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let mut pod_ip = arr(status, &["podIPs"])
        .first()
        .map(|ip| st(ip, &["ip"]))
        .unwrap_or("");
    if pod_ip.is_empty() {
        pod_ip = st(status, &["podIP"]);
    }
    let gates = arr(spec, &["readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = gates
            .iter()
            .filter(|gate| {
                let ty = st(gate, &["conditionType"]);
                arr(status, &["conditions"])
                    .iter()
                    .find(|c| st(c, &["type"]) == ty)
                    .is_some_and(|c| st(c, &["status"]) == "True")
            })
            .count();
        format!("{}/{}", true_conditions, gates.len())
    };

    vec![
        st(pod, &["metadata", "name"]).into(),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_str.into(),
        age(pod, now).into(),
        non_empty_or(pod_ip, "<none>").into(),
        non_empty_or(st(spec, &["nodeName"]), "<none>").into(),
        non_empty_or(st(status, &["nominatedNodeName"]), "<none>").into(),
        readiness_gates.into(),
    ]
}

fn last_termination(cs: &Value) -> Option<Timestamp> {
    ts(cs, &["lastState", "terminated", "finishedAt"])
}

fn job_cells(obj: &Value, now: Timestamp, name: Value, age: Value) -> Vec<Value> {
    let succeeded = int(obj, &["status", "succeeded"]);
    let completions = match opt_int(obj, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = opt_int(obj, &["spec", "parallelism"]).unwrap_or(0);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match (
        ts(obj, &["status", "startTime"]),
        ts(obj, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.duration_since(start)),
        (Some(start), Some(end)) => human_duration(end.duration_since(start)),
    };
    let has_condition = |ty: &str| {
        arr(obj, &["status", "conditions"])
            .iter()
            .find(|c| st(c, &["type"]) == ty)
            .is_some_and(|c| st(c, &["status"]) == "True")
    };
    let status = if has_condition("Complete") {
        "Complete"
    } else if has_condition("Failed") {
        "Failed"
    } else if is_set(obj, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if has_condition("Suspended") {
        "Suspended"
    } else if has_condition("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(get(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name,
        status.into(),
        completions.into(),
        duration.into(),
        age,
        names.into(),
        images.into(),
        format_label_selector(get(obj, &["spec", "selector"])).into(),
    ]
}

fn service_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let spec = get(obj, &["spec"]);
    let ty = str_or(spec, &["type"], "ClusterIP");
    let cluster_ip = arr(spec, &["clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| st(spec, &["clusterIP"]));
    let cluster_ip = non_empty_or(cluster_ip, "<none>");
    let external_ips: Vec<&str> = arr(spec, &["externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match ty {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_status(get(obj, &["status", "loadBalancer"]));
            if !external_ips.is_empty() {
                let mut results: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    results.extend(lb.split(','));
                }
                results.extend(external_ips.iter().copied());
                results.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => st(spec, &["externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports = make_port_string(arr(spec, &["ports"]));
    vec![
        name,
        ty.into(),
        cluster_ip.into(),
        external.into(),
        non_empty_or(&ports, "<none>").into(),
        age,
        format_labels(get(spec, &["selector"])).into(),
    ]
}

/// The "Port(s)" cell of a Service: "80/TCP", "80:30080/TCP", comma separated.
fn make_port_string(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let port = int(p, &["port"]);
            let protocol = str_or(p, &["protocol"], "TCP");
            let node_port = int(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Sorted, de-duplicated load-balancer ingress IPs (or hostnames); never clipped,
/// since the server prints wide.
fn load_balancer_status(lb: &Value) -> String {
    let mut set = BTreeSet::new();
    for ing in arr(lb, &["ingress"]) {
        let ip = st(ing, &["ip"]);
        let host = st(ing, &["hostname"]);
        if !ip.is_empty() {
            set.insert(ip);
        } else if !host.is_empty() {
            set.insert(host);
        }
    }
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn format_hosts(rules: &[Value]) -> String {
    let max = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == max {
            more = true;
        }
        let host = st(rule, &["host"]);
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more {
        return format!("{} + {} more...", ret, rules.len() - max);
    }
    ret
}

fn format_endpoints(subsets: &[Value]) -> String {
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr(ss, &["addresses"]);
        let ports = arr(ss, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for addr in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(st(addr, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for addr in addresses {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(join_host_port(st(addr, &["ip"]), int(port, &["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more {
        return format!("{} + {} more...", ret, count.saturating_sub(max));
    }
    ret
}

/// Go's net.JoinHostPort.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn format_discovery_ports(ports: &[Value]) -> String {
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for port in ports {
        if list.len() < max {
            let num = match (opt_int(port, &["port"]), get(port, &["name"]).as_str()) {
                (Some(p), _) => p.to_string(),
                (None, Some(n)) => n.to_string(),
                (None, None) => "*".to_string(),
            };
            list.push(num);
        } else if list.len() == max {
            more = true;
        }
        count += 1;
    }
    list_with_more(&list, more, count, max)
}

fn format_discovery_endpoints(endpoints: &[Value]) -> String {
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ep in endpoints {
        for addr in arr(ep, &["addresses"]).iter().filter_map(Value::as_str) {
            if list.len() < max {
                list.push(addr.to_string());
            } else if list.len() == max {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more(&list, more, count, max)
}

fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{} + {} more...", ret, count.saturating_sub(max));
    }
    if ret.is_empty() {
        return "<unset>".to_string();
    }
    ret
}

fn node_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    // The last condition of a given type wins, as in the Go map.
    if let Some(cond) = arr(obj, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| st(c, &["type"]) == "Ready")
    {
        if st(cond, &["status"]) == "True" {
            status.push("Ready".to_string());
        } else {
            status.push("NotReady".to_string());
        }
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if get(obj, &["spec", "unschedulable"]).as_bool() == Some(true) {
        status.push("SchedulingDisabled".to_string());
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = get(obj, &["metadata", "labels"]).as_object() {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(v.to_string());
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |ty: &str| {
        arr(obj, &["status", "addresses"])
            .iter()
            .find(|a| st(a, &["type"]) == ty)
            .map(|a| st(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = get(obj, &["status", "nodeInfo"]);
    vec![
        name,
        status.join(",").into(),
        roles.into(),
        age,
        st(info, &["kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        non_empty_or(st(info, &["osImage"]), "<unknown>").into(),
        non_empty_or(st(info, &["kernelVersion"]), "<unknown>").into(),
        non_empty_or(st(info, &["containerRuntimeVersion"]), "<unknown>").into(),
    ]
}

fn event_cells(group: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    // events.k8s.io/v1 renames most fields; both map onto the same internal type.
    let new_api = group == "events.k8s.io";
    let field = |core: &'static str, events: &'static str| if new_api { events } else { core };
    let involved = get(obj, &[field("involvedObject", "regarding")]);
    let source = get(obj, &[field("source", "deprecatedSource")]);

    let first_ts = ts(obj, &[field("firstTimestamp", "deprecatedFirstTimestamp")]);
    let first = match first_ts {
        Some(t) => since(Some(t), now),
        None => since(ts(obj, &["eventTime"]), now),
    };
    let mut last = match ts(obj, &[field("lastTimestamp", "deprecatedLastTimestamp")]) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(obj, &[field("count", "deprecatedCount")]);
    let series = get(obj, &["series"]);
    if series.is_object() {
        last = since(ts(series, &["lastObservedTime"]), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }

    let kind = st(involved, &["kind"]).to_lowercase();
    let target = match st(involved, &["name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = non_empty_or(
        st(source, &["component"]),
        st(obj, &["reportingController"]),
    );
    let host = non_empty_or(st(source, &["host"]), st(obj, &["reportingInstance"]));
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        last.into(),
        st(obj, &["type"]).into(),
        st(obj, &["reason"]).into(),
        target.into(),
        st(involved, &["fieldPath"]).into(),
        source.into(),
        st(obj, &[field("message", "note")]).trim().into(),
        first.into(),
        count.into(),
        st(obj, &["metadata", "name"]).into(),
    ]
}

fn hpa_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let spec = get(obj, &["spec"]);
    let reference = format!(
        "{}/{}",
        st(spec, &["scaleTargetRef", "kind"]),
        st(spec, &["scaleTargetRef", "name"])
    );
    let min_pods = match opt_int(spec, &["minReplicas"]) {
        Some(m) => m.to_string(),
        None => "<unset>".to_string(),
    };
    vec![
        name,
        reference.into(),
        format_hpa_metrics(obj).into(),
        min_pods.into(),
        int(spec, &["maxReplicas"]).into(),
        int(obj, &["status", "currentReplicas"]).into(),
        age,
    ]
}

fn format_hpa_metrics(obj: &Value) -> String {
    let spec = get(obj, &["spec"]);
    let status = get(obj, &["status"]);
    // autoscaling/v1 carries a single CPU utilization target instead of metrics.
    let (specs, statuses): (Vec<Value>, Vec<Value>) = match spec.get("metrics") {
        Some(Value::Array(m)) => (m.clone(), arr(status, &["currentMetrics"]).to_vec()),
        _ => match opt_int(spec, &["targetCPUUtilizationPercentage"]) {
            Some(target) => {
                let spec_metric = json!({"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}});
                let status_metric = match opt_int(status, &["currentCPUUtilizationPercentage"]) {
                    Some(cur) => vec![json!({"type": "Resource", "resource": {
                        "name": "cpu", "current": {"averageUtilization": cur}}})],
                    None => Vec::new(),
                };
                (vec![spec_metric], status_metric)
            }
            None => (Vec::new(), Vec::new()),
        },
    };
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let unknown = || "<unknown>".to_string();
    let mut list: Vec<String> = Vec::new();
    for (i, m) in specs.iter().enumerate() {
        let st_metric = statuses.get(i);
        let cur = |source: &str, key: &str| -> Option<String> {
            let v = get(st_metric?, &[source, "current", key]);
            if v.is_null() { None } else { Some(quantity(v)) }
        };
        let entry = match st(m, &["type"]) {
            "External" | "Object" => {
                let source = if st(m, &["type"]) == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = get(m, &[source, "target"]);
                if !get(target, &["averageValue"]).is_null() {
                    format!(
                        "{}/{} (avg)",
                        cur(source, "averageValue").unwrap_or_else(unknown),
                        quantity(get(target, &["averageValue"]))
                    )
                } else {
                    let current = match st_metric.map(|s| get(s, &[source])) {
                        Some(v) if v.is_object() => quantity(get(v, &["current", "value"])),
                        _ => unknown(),
                    };
                    format!("{}/{}", current, quantity(get(target, &["value"])))
                }
            }
            "Pods" => {
                let current = match st_metric.map(|s| get(s, &["pods"])) {
                    Some(v) if v.is_object() => quantity(get(v, &["current", "averageValue"])),
                    _ => unknown(),
                };
                format!(
                    "{}/{}",
                    current,
                    quantity(get(m, &["pods", "target", "averageValue"]))
                )
            }
            "Resource" | "ContainerResource" => {
                let source = if st(m, &["type"]) == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let res_name = st(m, &[source, "name"]);
                let target = get(m, &[source, "target"]);
                if !get(target, &["averageValue"]).is_null() {
                    let current = match st_metric.map(|s| get(s, &[source])) {
                        Some(v) if v.is_object() => quantity(get(v, &["current", "averageValue"])),
                        _ => unknown(),
                    };
                    format!(
                        "{}: {}/{}",
                        res_name,
                        current,
                        quantity(get(target, &["averageValue"]))
                    )
                } else {
                    let current = st_metric
                        .and_then(|s| opt_int(s, &[source, "current", "averageUtilization"]))
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(unknown);
                    let target = opt_int(target, &["averageUtilization"])
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<auto>".to_string());
                    format!("{res_name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(entry);
    }
    let max = 2;
    let count = list.len();
    if count > max {
        list.truncate(max);
        return format!("{} + {} more...", list.join(", "), count - max);
    }
    list.join(", ")
}

fn subjects_strings(subjects: &[Value]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut sas = Vec::new();
    for s in subjects {
        let name = st(s, &["name"]);
        match st(s, &["kind"]) {
            "ServiceAccount" => sas.push(format!("{}/{}", st(s, &["namespace"]), name)),
            "User" => users.push(name.to_string()),
            "Group" => groups.push(name.to_string()),
            _ => {}
        }
    }
    (users, groups, sas)
}

fn csr_status(obj: &Value) -> String {
    let (mut approved, mut denied, mut failed) = (false, false, false);
    for c in arr(obj, &["status", "conditions"]) {
        match st(c, &["type"]) {
            "Approved" => approved = true,
            "Denied" => denied = true,
            "Failed" => failed = true,
            _ => {}
        }
    }
    let mut status = if denied {
        "Denied"
    } else if approved {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if failed {
        status.push_str(",Failed");
    }
    if !st(obj, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn resource_quota_columns(obj: &Value) -> (String, String) {
    let hard = get(obj, &["status", "hard"]).as_object();
    let mut resources: Vec<&String> = hard.map(|h| h.keys().collect()).unwrap_or_default();
    resources.sort();
    let mut request = Vec::new();
    let mut limit = Vec::new();
    for r in resources {
        let used = quantity(get(obj, &["status", "used", r]));
        let hard = quantity(get(obj, &["status", "hard", r]));
        let entry = format!("{r}: {used}/{hard}");
        let mut pieces = r.split('.');
        let first = pieces.next();
        if pieces.next().is_some() && first == Some("limits") {
            limit.push(entry);
        } else {
            request.push(entry);
        }
    }
    (request.join(", "), limit.join(", "))
}

fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    let mut out = Vec::new();
    if has("ReadWriteOnce") {
        out.push("RWO");
    }
    if has("ReadOnlyMany") {
        out.push("ROX");
    }
    if has("ReadWriteMany") {
        out.push("RWX");
    }
    if has("ReadWriteOncePod") {
        out.push("RWOP");
    }
    out.join(",")
}

/// Lay out container names and images, comma separated.
fn container_cells(containers: &Value) -> (String, String) {
    let containers = containers.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| st(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| st(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

fn print_bool_ptr(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

// ---------------------------------------------------------------------------
// Labels and selectors
// ---------------------------------------------------------------------------

/// `labels.FormatLabels`: sorted `k=v` pairs joined by ",", or "<none>".
pub fn format_labels(labels: &Value) -> String {
    let Some(map) = labels.as_object() else {
        return "<none>".to_string();
    };
    if map.is_empty() {
        return "<none>".to_string();
    }
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}={}", k, v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// `metav1.FormatLabelSelector` for a `*LabelSelector`: "<none>" when the selector
/// selects everything (or is nil), "<error>" when it cannot be converted.
pub fn format_label_selector(selector: &Value) -> String {
    match label_selector_string(selector) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    }
}

/// Like [`format_label_selector`] for a non-pointer selector (a missing one is empty).
fn format_label_selector_ref(selector: &Value) -> String {
    if selector.is_null() {
        return "<none>".to_string();
    }
    format_label_selector(selector)
}

/// `LabelSelectorAsSelector(sel).String()`: requirements sorted by key.
fn label_selector_string(selector: &Value) -> Result<String, ()> {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(ml) = get(selector, &["matchLabels"]).as_object() {
        for (k, v) in ml {
            reqs.push((
                k.clone(),
                format!("{}={}", k, v.as_str().unwrap_or_default()),
            ));
        }
    }
    for expr in arr(selector, &["matchExpressions"]) {
        let key = st(expr, &["key"]);
        let mut values: Vec<&str> = arr(expr, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort();
        let s = match st(expr, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{} in ({})", key, values.join(",")),
            "NotIn" => format!("{} notin ({})", key, values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_string(), s));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(","))
}

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

static NULL: Value = Value::Null;

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return &NULL,
        }
    }
    cur
}

fn st<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).as_str().unwrap_or("")
}

fn str_or<'a>(v: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    get(v, path).as_str().unwrap_or(default)
}

fn str_or_nonempty<'a>(v: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    non_empty_or(st(v, path), default)
}

fn non_empty_or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    let v = get(v, path);
    v.as_i64()
        .or_else(|| v.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        .or_else(|| v.as_f64().map(|f| f as i64))
}

fn int(v: &Value, path: &[&str]) -> i64 {
    opt_int(v, path).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path).as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn map_len(v: &Value, path: &[&str]) -> usize {
    get(v, path).as_object().map(|m| m.len()).unwrap_or(0)
}

fn is_set(v: &Value, path: &[&str]) -> bool {
    !get(v, path).is_null()
}

fn ts(v: &Value, path: &[&str]) -> Option<Timestamp> {
    get(v, path)
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    get(obj, &["metadata", "annotations"])
        .get(key)
        .and_then(Value::as_str)
}

/// An IntOrString rendered like Go's `IntOrString.String()`.
fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// A resource.Quantity as printed; a missing quantity is the zero quantity "0".
fn quantity(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-05-10T12:00:00Z".parse().unwrap()
    }

    fn cells(group: &str, kind: &str, obj: Value) -> Vec<Value> {
        let cells = row_cells(group, kind, &obj, now());
        assert_eq!(
            cells.len(),
            columns(group, kind).len(),
            "{kind}: cells vs columns"
        );
        cells
    }

    fn strs(cells: &[Value]) -> Vec<String> {
        cells
            .iter()
            .map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn human_durations() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (3 * 60 + 2, "3m2s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60 + 30, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 3 * 60, "5h3m"),
            (8 * 3600 + 59 * 60, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400, "2d"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (8 * 86400, "8d"),
            (45 * 86400 + 7 * 3600, "45d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (3 * 365 * 86400 + 20 * 86400, "3y20d"),
            (9 * 365 * 86400 + 20 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                human_duration(SignedDuration::from_secs(secs)),
                want,
                "{secs}s"
            );
        }
        // Sub-second precision truncates towards zero, like Go's int(d.Seconds()).
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(human_duration(SignedDuration::from_millis(2900)), "2s");
    }

    #[test]
    fn column_json_shape() {
        let cols = columns_json("", "Pod");
        let first = &cols[0];
        assert_eq!(first["name"], "Name");
        assert_eq!(first["type"], "string");
        assert_eq!(first["format"], "name");
        assert_eq!(first["priority"], 0);
        assert!(
            first["description"]
                .as_str()
                .unwrap()
                .starts_with("Name must be unique")
        );
        let names: Vec<&str> = columns("", "Pod").iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let prio: Vec<i32> = columns("", "Pod").iter().map(|c| c.priority).collect();
        assert_eq!(prio, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        // serde serialisation matches to_json.
        let c = columns("", "Pod")[5];
        assert_eq!(serde_json::to_value(c).unwrap(), c.to_json());
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-10T11:55:00Z"},
            "spec": {"containers": [{"name": "a", "image": "nginx"}]},
            "status": status,
        })
    }

    #[test]
    fn pod_running_ready() {
        let c = cells(
            "",
            "Pod",
            json!({
                "metadata": {"name": "web", "creationTimestamp": "2024-05-10T11:55:00Z"},
                "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
                "status": {
                    "phase": "Running",
                    "podIP": "10.0.0.5",
                    "podIPs": [{"ip": "10.0.0.5"}],
                    "containerStatuses": [
                        {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                        {"name": "b", "ready": false, "restartCount": 0, "state": {"running": {}}}
                    ]
                }
            }),
        );
        assert_eq!(
            strs(&c),
            [
                "web", "1/2", "Running", "0", "5m", "10.0.0.5", "n1", "<none>", "<none>"
            ]
        );
    }

    #[test]
    fn pod_statuses() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"phase": "Pending"}), "0/1", "Pending"),
            (
                json!({"phase": "Pending", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
                "0/1",
                "ContainerCreating",
            ),
            (
                json!({"phase": "Running", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 4,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
                "0/1",
                "CrashLoopBackOff",
            ),
            (
                json!({"phase": "Succeeded", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
                "0/1",
                "Completed",
            ),
            (
                json!({"phase": "Failed", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 2}}}]}),
                "0/1",
                "ExitCode:2",
            ),
            (
                json!({"phase": "Failed", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
                "0/1",
                "Signal:9",
            ),
            (
                json!({"phase": "Failed", "reason": "Evicted"}),
                "0/1",
                "Evicted",
            ),
            (
                json!({"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                "0/1",
                "SchedulingGated",
            ),
        ];
        for (status, ready, want) in cases {
            let c = cells("", "Pod", pod(status.clone()));
            assert_eq!(c[1], ready, "{status}");
            assert_eq!(c[2], want, "{status}");
        }
    }

    #[test]
    fn pod_init_containers() {
        let mk = |init_statuses: Value| {
            json!({
                "metadata": {"name": "p", "creationTimestamp": "2024-05-10T11:00:00Z"},
                "spec": {
                    "initContainers": [{"name": "i1"}, {"name": "i2"}],
                    "containers": [{"name": "a"}]
                },
                "status": {"phase": "Pending", "initContainerStatuses": init_statuses,
                    "containerStatuses": [{"name": "a", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}}}]}
            })
        };
        let c = cells(
            "",
            "Pod",
            mk(json!([
                {"name": "i1", "restartCount": 0, "state": {"running": {}}},
                {"name": "i2", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
            ])),
        );
        assert_eq!(c[2], "Init:0/2");
        let c = cells(
            "",
            "Pod",
            mk(json!([
                {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
                {"name": "i2", "restartCount": 0, "state": {"running": {}}}
            ])),
        );
        assert_eq!(c[2], "Init:1/2");
        let c = cells(
            "",
            "Pod",
            mk(json!([
                {"name": "i1", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-10T11:58:00Z"}}}
            ])),
        );
        assert_eq!(c[2], "Init:CrashLoopBackOff");
        assert_eq!(c[3], "3 (2m ago)");
        let c = cells(
            "",
            "Pod",
            mk(json!([
                {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
            ])),
        );
        assert_eq!(c[2], "Init:Error");
        let c = cells(
            "",
            "Pod",
            mk(json!([
                {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}
            ])),
        );
        assert_eq!(c[2], "Init:ExitCode:3");
    }

    #[test]
    fn pod_sidecar_counts_towards_ready() {
        let p = json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-05-10T11:00:00Z"},
            "spec": {
                "initContainers": [{"name": "side", "restartPolicy": "Always"}],
                "containers": [{"name": "a"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{"name": "side", "ready": true, "started": true,
                    "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [{"name": "a", "ready": true, "restartCount": 2,
                    "state": {"running": {}}}]
            }
        });
        let c = cells("", "Pod", p);
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "3");
    }

    #[test]
    fn pod_restarts_and_terminating() {
        let mut p = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 3, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-10T11:55:00Z"}}}]}));
        let c = cells("", "Pod", p.clone());
        assert_eq!(c[1], "1/1");
        assert_eq!(c[3], "3 (5m ago)");
        p["metadata"]["deletionTimestamp"] = json!("2024-05-10T11:59:00Z");
        let c = cells("", "Pod", p.clone());
        assert_eq!(c[2], "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        let c = cells("", "Pod", p.clone());
        assert_eq!(c[2], "Unknown");
        // Terminal pods are not reported as Terminating.
        let mut done = pod(json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
        done["metadata"]["deletionTimestamp"] = json!("2024-05-10T11:59:00Z");
        assert_eq!(cells("", "Pod", done.clone())[2], "Completed");
        assert_eq!(row_conditions("", "Pod", &done)[0]["reason"], "Succeeded");
        // A completed container next to a running one: Running/NotReady.
        let mixed = pod(json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"name": "b", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}}
        ]}));
        assert_eq!(cells("", "Pod", mixed)[2], "NotReady");
    }

    #[test]
    fn pod_readiness_gates_and_nominated() {
        let p = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}],
                     "readinessGates": [{"conditionType": "x/ready"}, {"conditionType": "y/ready"}]},
            "status": {"phase": "Pending", "nominatedNodeName": "n2",
                       "conditions": [{"type": "x/ready", "status": "True"}]}
        });
        let c = cells("", "Pod", p);
        assert_eq!(c[4], "<unknown>");
        assert_eq!(c[7], "n2");
        assert_eq!(c[8], "1/2");
    }

    #[test]
    fn service_ports_and_ips() {
        assert_eq!(
            make_port_string(&[
                json!({"port": 80, "protocol": "TCP", "nodePort": 30080}),
                json!({"port": 53, "protocol": "UDP"}),
                json!({"port": 443})
            ]),
            "80:30080/TCP,53/UDP,443/TCP"
        );
        let svc = |spec: Value, status: Value| {
            json!({"metadata": {"name": "s", "creationTimestamp": "2024-05-09T12:00:00Z"},
                   "spec": spec, "status": status})
        };
        let c = cells(
            "",
            "Service",
            svc(
                json!({"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                       "ports": [{"port": 443, "protocol": "TCP"}], "selector": {"b": "2", "a": "1"}}),
                json!({}),
            ),
        );
        assert_eq!(
            strs(&c),
            [
                "s",
                "ClusterIP",
                "10.96.0.1",
                "<none>",
                "443/TCP",
                "24h",
                "a=1,b=2"
            ]
        );
        let c = cells(
            "",
            "Service",
            svc(
                json!({"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"],
                       "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}]}),
                json!({}),
            ),
        );
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "80:31000/TCP");
        let c = cells(
            "",
            "Service",
            svc(
                json!({"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"], "externalIPs": ["5.5.5.5"]}),
                json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example.com"}]}}),
            ),
        );
        assert_eq!(c[3], "1.2.3.4,lb.example.com,5.5.5.5");
        assert_eq!(c[4], "<none>");
        assert_eq!(c[6], "<none>");
        let c = cells(
            "",
            "Service",
            svc(
                json!({"type": "ExternalName", "externalName": "db.example.com"}),
                json!({}),
            ),
        );
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "db.example.com");
        let c = cells(
            "",
            "Service",
            svc(
                json!({"clusterIP": "None", "ports": [{"port": 80}]}),
                json!({}),
            ),
        );
        assert_eq!(c[1], "ClusterIP");
        assert_eq!(c[2], "None");
    }

    #[test]
    fn node_status_roles() {
        let node = |ready: &str, unschedulable: bool| {
            json!({
                "metadata": {"name": "n1", "creationTimestamp": "2024-04-10T12:00:00Z",
                             "labels": {"node-role.kubernetes.io/control-plane": "",
                                        "node-role.kubernetes.io/master": "",
                                        "kubernetes.io/role": "etcd"}},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "conditions": [{"type": "MemoryPressure", "status": "False"},
                                   {"type": "Ready", "status": ready}],
                    "addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                                  {"type": "Hostname", "address": "n1"}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian",
                                 "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7"}
                }
            })
        };
        let c = cells("", "Node", node("True", false));
        assert_eq!(
            strs(&c),
            [
                "n1",
                "Ready",
                "control-plane,etcd,master",
                "30d",
                "v1.33.0",
                "192.168.1.10",
                "<none>",
                "Debian",
                "6.1.0",
                "containerd://1.7"
            ]
        );
        assert_eq!(
            cells("", "Node", node("True", true))[1],
            "Ready,SchedulingDisabled"
        );
        assert_eq!(cells("", "Node", node("Unknown", false))[1], "NotReady");
        let bare = json!({"metadata": {"name": "n2"}, "spec": {"unschedulable": true}});
        let c = cells("", "Node", bare);
        assert_eq!(c[1], "Unknown,SchedulingDisabled");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[7], "<unknown>");
    }

    #[test]
    fn deployment_row() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-10T09:00:00Z"},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web"},
                                  "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                                       {"key": "canary", "operator": "DoesNotExist"}]},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
                                                          {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let c = cells("apps", "Deployment", d);
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3h"),
                json!("nginx,side"),
                json!("nginx:1.27,busybox"),
                json!("app=web,!canary,tier in (a,b)")
            ]
        );
        let names: Vec<&str> = columns("apps", "Deployment")
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        // Missing replicas defaults to 1; missing status to zero.
        let c = cells(
            "apps",
            "Deployment",
            json!({"metadata": {"name": "x"}, "spec": {}}),
        );
        assert_eq!(c[1], "0/1");
        assert_eq!(c[7], "");
    }

    #[test]
    fn workloads() {
        let rs = json!({"metadata": {"name": "rs"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            strs(&cells("apps", "ReplicaSet", rs))[1..4],
            ["2", "2", "1"]
        );
        let sts = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(cells("apps", "StatefulSet", sts)[1], "3/3");
        let ds = json!({"metadata": {"name": "ds"},
            "spec": {"template": {"spec": {"nodeSelector": {"os": "linux"}}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}});
        let c = strs(&cells("apps", "DaemonSet", ds));
        assert_eq!(c[1..7], ["3", "3", "2", "3", "2", "os=linux"]);
        assert_eq!(c[10], "<none>");
        let rc = json!({"metadata": {"name": "rc"}, "spec": {"selector": {"app": "x"}}});
        let c = strs(&cells("", "ReplicationController", rc));
        assert_eq!(c[1], "1");
        assert_eq!(c[7], "app=x");
    }

    #[test]
    fn jobs_and_cronjobs() {
        let job = json!({"metadata": {"name": "j", "creationTimestamp": "2024-05-10T11:00:00Z"},
            "spec": {"completions": 3, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}},
            "status": {"succeeded": 3, "startTime": "2024-05-10T11:00:00Z",
                       "completionTime": "2024-05-10T11:00:42Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        let c = strs(&cells("batch", "Job", job));
        assert_eq!(c[..5], ["j", "Complete", "3/3", "42s", "60m"]);
        let running = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 2},
            "status": {"startTime": "2024-05-10T11:58:00Z"}});
        let c = strs(&cells("batch", "Job", running));
        assert_eq!(c[1..4], ["Running", "0/1 of 2", "2m"]);
        let cj = json!({"metadata": {"name": "cj", "creationTimestamp": "2024-05-01T12:00:00Z"},
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}},
            "status": {"active": [{"name": "x"}], "lastScheduleTime": "2024-05-10T11:55:00Z"}});
        let c = cells("batch", "CronJob", cj);
        assert_eq!(
            strs(&c),
            [
                "cj",
                "*/5 * * * *",
                "<none>",
                "False",
                "1",
                "5m",
                "9d",
                "c",
                "i",
                "<none>"
            ]
        );
    }

    #[test]
    fn config_and_storage() {
        let cm = json!({"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("", "ConfigMap", cm)[1], 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        let c = cells("", "Secret", secret);
        assert_eq!(c[1], "kubernetes.io/tls");
        assert_eq!(c[2], 2);
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(cells("", "ServiceAccount", sa)[1], 0);
        let pvc = json!({"metadata": {"name": "data"},
            "spec": {"volumeName": "pv1", "storageClassName": "standard"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                       "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}});
        let c = strs(&cells("", "PersistentVolumeClaim", pvc));
        assert_eq!(
            c[1..7],
            ["Bound", "pv1", "1Gi", "RWO,ROX", "standard", "<unset>"]
        );
        let pv = json!({"metadata": {"name": "pv1"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain",
                     "claimRef": {"namespace": "ns", "name": "data"}, "storageClassName": "standard",
                     "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        let c = strs(&cells("", "PersistentVolume", pv));
        assert_eq!(
            c[1..9],
            [
                "1Gi", "RWO", "Retain", "Bound", "ns/data", "standard", "<unset>", ""
            ]
        );
        assert_eq!(c[10], "Filesystem");
        let sc = json!({"metadata": {"name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        let c = cells("storage.k8s.io", "StorageClass", sc);
        assert_eq!(c[0], "standard (default)");
        assert_eq!(c[2], "Delete");
        assert_eq!(c[3], "WaitForFirstConsumer");
        assert_eq!(c[4], false);
    }

    #[test]
    fn events() {
        let ev = json!({"metadata": {"name": "web.17c"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
            "reason": "Pulled", "type": "Normal", "message": "Pulled image \n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2024-05-10T11:00:00Z", "lastTimestamp": "2024-05-10T11:58:00Z", "count": 4});
        let c = cells("", "Event", ev);
        assert_eq!(
            strs(&c),
            [
                "2m",
                "Normal",
                "Pulled",
                "pod/web",
                "spec.containers{a}",
                "kubelet, n1",
                "Pulled image",
                "60m",
                "4",
                "web.17c"
            ]
        );
        let names: Vec<&str> = columns("", "Event").iter().map(|c| c.name).collect();
        assert_eq!(names[..4], ["Last Seen", "Type", "Reason", "Object"]);
        let new_api = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Node", "name": "n1"},
            "note": "hello", "eventTime": "2024-05-10T11:59:30.000000Z", "reportingController": "ctl",
            "type": "Warning", "reason": "X"});
        let c = strs(&cells("events.k8s.io", "Event", new_api));
        assert_eq!(
            c,
            [
                "30s", "Warning", "X", "node/n1", "", "ctl", "hello", "30s", "1", "e"
            ]
        );
    }

    #[test]
    fn misc_kinds() {
        let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}});
        assert_eq!(cells("coordination.k8s.io", "Lease", lease)[1], "me");
        let ing = json!({"metadata": {"name": "i"},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.com"}, {"host": "b.com"}],
                     "tls": [{"hosts": ["a.com"]}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}});
        let c = strs(&cells("networking.k8s.io", "Ingress", ing));
        assert_eq!(c[1..5], ["nginx", "a.com,b.com", "1.1.1.1", "80, 443"]);
        let ic = json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
        assert_eq!(
            cells("networking.k8s.io", "IngressClass", ic)[2],
            "IngressParameters.k8s.example.com/p"
        );
        let np = json!({"metadata": {"name": "np"}, "spec": {"podSelector": {}}});
        assert_eq!(cells("networking.k8s.io", "NetworkPolicy", np)[1], "<none>");
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            strs(&cells("policy", "PodDisruptionBudget", pdb))[1..4],
            ["2", "N/A", "1"]
        );
        let hpa = json!({"metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 2,
                       "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}});
        let c = strs(&cells("autoscaling", "HorizontalPodAutoscaler", hpa));
        assert_eq!(c[1..6], ["Deployment/web", "cpu: 12%/80%", "1", "5", "2"]);
        let hpa_v1 = json!({"metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                     "targetCPUUtilizationPercentage": 50}});
        let c = strs(&cells("autoscaling", "HorizontalPodAutoscaler", hpa_v1));
        assert_eq!(c[2..4], ["cpu: <unknown>/50%", "<unset>"]);
        let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                         {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"},
                         {"kind": "User", "name": "bob"}]});
        let c = strs(&cells("rbac.authorization.k8s.io", "RoleBinding", rb));
        assert_eq!(c[1], "ClusterRole/view");
        assert_eq!(c[3..6], ["alice, bob", "devs", "ns/sa"]);
        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2024-05-10T11:00:00Z"}});
        let cols = columns("rbac.authorization.k8s.io", "ClusterRole");
        assert_eq!(cols[1].name, "Created At");
        assert_eq!(cols[1].type_, "date");
        assert_eq!(
            cells("rbac.authorization.k8s.io", "Role", role)[1],
            "2024-05-10T11:00:00Z"
        );
        let pc = json!({"metadata": {"name": "high"}, "value": 1000, "globalDefault": false,
            "preemptionPolicy": "PreemptLowerPriority"});
        assert_eq!(
            cells("scheduling.k8s.io", "PriorityClass", pc),
            vec![
                json!("high"),
                json!(1000),
                json!(false),
                json!("<unknown>"),
                json!("PreemptLowerPriority")
            ]
        );
        let rq = json!({"metadata": {"name": "q"}, "status": {
            "hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi"},
            "used": {"pods": "3", "limits.cpu": "500m"}}});
        let c = strs(&cells("", "ResourceQuota", rq));
        assert_eq!(
            c[1..3],
            ["pods: 3/10, requests.memory: 0/1Gi", "limits.cpu: 500m/2"]
        );
        let cr = json!({"metadata": {"name": "web-5d", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]},
            "revision": 2});
        let c = cells("apps", "ControllerRevision", cr);
        assert_eq!(c[1], "statefulset.apps/web");
        assert_eq!(c[2], 2);
        let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Terminating"}});
        assert_eq!(cells("", "Namespace", ns)[1], "Terminating");
        let eps = json!({"metadata": {"name": "e"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            cells("", "Endpoints", eps)[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(
            cells("", "Endpoints", json!({"metadata": {"name": "e"}}))[1],
            "<none>"
        );
        let es = json!({"metadata": {"name": "es"}, "addressType": "IPv6",
            "ports": [{"port": 80}, {"name": "x"}], "endpoints": [{"addresses": ["fd00::1"]}]});
        assert_eq!(
            strs(&cells("discovery.k8s.io", "EndpointSlice", es))[1..4],
            ["IPv6", "80,x", "fd00::1"]
        );
        let es_empty = json!({"metadata": {"name": "es"}, "addressType": "IPv4"});
        assert_eq!(
            strs(&cells("discovery.k8s.io", "EndpointSlice", es_empty))[2..4],
            ["<unset>", "<unset>"]
        );
    }

    #[test]
    fn default_table_for_unknown_kinds() {
        let obj =
            json!({"metadata": {"name": "thing", "creationTimestamp": "2024-05-10T11:59:00Z"}});
        let cols = columns("example.com", "Widget");
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0].name, "Name");
        assert_eq!(cols[1].name, "Age");
        assert_eq!(
            cells("example.com", "Widget", obj.clone()),
            vec![json!("thing"), json!("60s")]
        );
        // A same-named kind in another group is not the built-in.
        assert_eq!(columns("example.com", "Pod").len(), 2);
        assert_eq!(columns("core", "Pod").len(), 9);
    }

    #[test]
    fn label_selectors() {
        assert_eq!(format_label_selector(&Value::Null), "<none>");
        assert_eq!(format_label_selector(&json!({})), "<none>");
        assert_eq!(
            format_label_selector(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
            ),
            "<error>"
        );
        assert_eq!(
            format_label_selector(&json!({"matchExpressions": [
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "app", "operator": "Exists"}]})),
            "app,env notin (prod)"
        );
        assert_eq!(format_labels(&json!({"z": "1", "a": "2"})), "a=2,z=1");
        assert_eq!(format_labels(&json!({})), "<none>");
    }
}

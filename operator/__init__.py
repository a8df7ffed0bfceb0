"""The reconciler: makes Docker match the desired state stored in Postgres."""

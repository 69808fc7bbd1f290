"""The "Bone metastasis (AI)" Segment Editor effect (registered by the BoneMetSeg module at startup)."""
